package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
)

// What SIGHUP changes in a running agent: the log level and the node's metadata
// (meta and roles). Every other setting is read once at start; a reload that
// changes one logs it by name as needing a restart and leaves it as it runs.

// restartOnly is a fingerprint of the settings a reload cannot apply, by the
// config file's key names.
func (s agentSettings) restartOnly() map[string]string {
	c := s.cfg
	str := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	return map[string]string{
		"name": c.Name, "bind": c.Bind, "advertise": c.Advertise, "join": str(c.Join), "control": c.Control,
		"profile": c.Profile, "cluster_label": c.ClusterLabel, "mtu": str(c.MTU), "keys": str(c.Keys),
		"insecure": str(c.Insecure), "log_format": s.logFormat, "addr_file": s.addrFile,
		"join_timeout": s.joinTimeout.String(), "leave_timeout": s.leaveTimeout.String(), "swim": s.swim,
		"voters": str(c.Voters), "voter": str(c.Voter), "data_dir": c.DataDir, "audit_log": s.auditLog,
		"shards": str(c.Shards), "control_max_conns": str(c.ControlMaxConns), "control_max_watchers": str(c.ControlMaxWatchers),
	}
}

// metaSetter is the part of *node.Node a reload writes to.
type metaSetter interface {
	SetMeta(key, value string) error
	DeleteMeta(key string) error
}

// reloadAgent re-reads the command line and config file and applies what can
// change live; cur is replaced by the settings now in force. It never stops the
// agent: a config that does not parse is refused and the running one kept.
func reloadAgent(args []string, cur *agentSettings, level *slog.LevelVar, n metaSetter, log *slog.Logger) {
	next, err := parseAgent(args, io.Discard)
	if err != nil {
		log.Error("reload refused; the running configuration stays in force", "err", err)
		return
	}
	var restart []string
	old, now := cur.restartOnly(), next.restartOnly()
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if old[k] != now[k] {
			restart = append(restart, k)
		}
	}
	if len(restart) > 0 {
		log.Warn("reload: these settings change only at a restart; they keep their running values", "settings", strings.Join(restart, ","))
	}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(next.logLevel)) // validated by parseAgent
	if lvl != level.Level() {
		log.Info("reload: log level", "from", level.Level().String(), "to", lvl.String())
		level.Set(lvl)
	}
	was, want := agentMeta(*cur), agentMeta(next)
	var changed []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := was[k]; ok && v == want[k] {
			continue
		}
		if err := n.SetMeta(k, want[k]); err != nil {
			log.Error("reload: metadata not set", "key", k, "err", err)
			continue
		}
		changed = append(changed, k)
	}
	for _, k := range slices.Sorted(maps.Keys(was)) {
		if _, ok := want[k]; ok {
			continue
		}
		if err := n.DeleteMeta(k); err != nil {
			log.Error("reload: metadata not deleted", "key", k, "err", err)
			continue
		}
		changed = append(changed, k)
	}
	log.Info("configuration reloaded", "meta_changed", strings.Join(changed, ","), "restart_needed", strings.Join(restart, ","))
	// Keep the running values of restart-only settings, so the next reload
	// compares against what runs.
	keep := *cur
	keep.logLevel, keep.cfg.Meta = next.logLevel, next.cfg.Meta
	*cur = keep
}

// agentMeta is the metadata the settings give the node, as the node publishes it:
// a voter's roles include "voter".
func agentMeta(s agentSettings) map[string]string {
	m := maps.Clone(s.cfg.Meta)
	if m == nil {
		m = map[string]string{}
	}
	if s.cfg.Voter && !control.HasRole(m, node.VoterRole) {
		if m[node.RolesKey] == "" {
			m[node.RolesKey] = node.VoterRole
		} else {
			m[node.RolesKey] += "," + node.VoterRole
		}
	}
	return m
}
