package shard

import (
	"fmt"
	"time"
)

// EventKind says what changed.
type EventKind uint8

const (
	// EventDraining: the leader stopped granting Shard to From (To is where it
	// will go, "" if nowhere yet). Forced is set when From was suspect, dead,
	// gone, or unknown (a new leader's shards that nobody re-confirmed).
	EventDraining EventKind = iota + 1
	// EventRebalancing: From released Shard or its lease lapsed; the leader now
	// grants it to To.
	EventRebalancing
	// EventSteady: To confirmed it serves Shard (or re-confirmed it to a new
	// leader).
	EventSteady
	// EventFenced: the Controller saw Epoch, above its own, from a member: it is a
	// deposed leader and stops granting.
	EventFenced
	// EventAcquired: this Owner started serving Shard.
	EventAcquired
	// EventReleased: this Owner stopped serving Shard because the leader asked
	// or stopped granting it.
	EventReleased
	// EventExpired: this Owner's lease on Shard lapsed before a renewal arrived.
	EventExpired
	// EventStaleEpoch: this Owner rejected a leader message of Epoch, below the
	// highest it has seen (From names the sender).
	EventStaleEpoch
	// EventMapChanged: a new map (Epoch, Version) took effect.
	EventMapChanged
)

var kindNames = [...]string{
	EventDraining:    "draining",
	EventRebalancing: "rebalancing",
	EventSteady:      "steady",
	EventFenced:      "fenced",
	EventAcquired:    "acquired",
	EventReleased:    "released",
	EventExpired:     "expired",
	EventStaleEpoch:  "stale-epoch",
	EventMapChanged:  "map-changed",
}

func (k EventKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one transition, in the order the machine made them. The host turns it
// into a metric and a log line (String).
type Event struct {
	Kind     EventKind
	Shard    uint32
	From, To string
	Forced   bool
	Epoch    uint64
	// Version: on a Controller's event, the first map version that reflects it;
	// on EventAcquired, the map version of the grant, so (Epoch, Version) is a
	// fencing token that differs for every owner process the shard is granted to.
	Version uint64
	At      time.Time // the machine's clock
}

// String renders the event for a log line, e.g. "shard 12 draining from node-a to
// node-b".
func (e Event) String() string {
	name := func(n string) string {
		if n == "" {
			return "(none)"
		}
		return n
	}
	switch e.Kind {
	case EventDraining, EventRebalancing:
		s := fmt.Sprintf("shard %d %s from %s to %s", e.Shard, e.Kind, name(e.From), name(e.To))
		if e.Forced {
			s += " (forced)"
		}
		return s
	case EventSteady:
		return fmt.Sprintf("shard %d steady on %s", e.Shard, name(e.To))
	case EventAcquired, EventReleased, EventExpired:
		return fmt.Sprintf("shard %d %s", e.Shard, e.Kind)
	case EventFenced:
		return fmt.Sprintf("controller fenced by epoch %d", e.Epoch)
	case EventStaleEpoch:
		return fmt.Sprintf("rejected stale epoch %d from %s", e.Epoch, name(e.From))
	case EventMapChanged:
		return fmt.Sprintf("map epoch %d version %d", e.Epoch, e.Version)
	}
	return e.Kind.String()
}
