package control

import (
	"context"

	"connectrpc.com/connect"

	controlv1 "github.com/omnirelay/mesh/proto/omnirelay/control/v1"
	"github.com/omnirelay/mesh/proto/omnirelay/control/v1/controlv1connect"
)

// The methods of ControlService: each runs its route (rpcRoutes) through unary or
// stream, which is all an RPC is.

var _ controlv1connect.ControlServiceHandler = (*grpcService)(nil)

func (s *grpcService) ListPeers(ctx context.Context, r *connect.Request[controlv1.ListPeersRequest]) (*connect.Response[controlv1.PeerList], error) {
	return unary(ctx, s, r, new(controlv1.PeerList))
}

func (s *grpcService) WatchPeers(ctx context.Context, r *connect.Request[controlv1.WatchPeersRequest], st *connect.ServerStream[controlv1.PeersEvent]) error {
	return stream(ctx, s, r, st)
}

func (s *grpcService) GetPeer(ctx context.Context, r *connect.Request[controlv1.GetPeerRequest]) (*connect.Response[controlv1.PeerReply], error) {
	return unary(ctx, s, r, new(controlv1.PeerReply))
}

func (s *grpcService) ForceLeave(ctx context.Context, r *connect.Request[controlv1.ForceLeaveRequest]) (*connect.Response[controlv1.ForceLeaveReply], error) {
	return unary(ctx, s, r, new(controlv1.ForceLeaveReply))
}

func (s *grpcService) GetStatus(ctx context.Context, r *connect.Request[controlv1.GetStatusRequest]) (*connect.Response[controlv1.NodeStatus], error) {
	return unary(ctx, s, r, new(controlv1.NodeStatus))
}

func (s *grpcService) StreamLogs(ctx context.Context, r *connect.Request[controlv1.StreamLogsRequest], st *connect.ServerStream[controlv1.LogEvent]) error {
	return stream(ctx, s, r, st)
}

func (s *grpcService) SetMeta(ctx context.Context, r *connect.Request[controlv1.SetMetaRequest]) (*connect.Response[controlv1.MetaChange], error) {
	return unary(ctx, s, r, new(controlv1.MetaChange))
}

func (s *grpcService) DeleteMeta(ctx context.Context, r *connect.Request[controlv1.DeleteMetaRequest]) (*connect.Response[controlv1.MetaChange], error) {
	return unary(ctx, s, r, new(controlv1.MetaChange))
}

func (s *grpcService) Join(ctx context.Context, r *connect.Request[controlv1.JoinRequest]) (*connect.Response[controlv1.JoinReply], error) {
	return unary(ctx, s, r, new(controlv1.JoinReply))
}

func (s *grpcService) Leave(ctx context.Context, r *connect.Request[controlv1.LeaveRequest]) (*connect.Response[controlv1.LeaveReply], error) {
	return unary(ctx, s, r, new(controlv1.LeaveReply))
}

func (s *grpcService) GetKeyring(ctx context.Context, r *connect.Request[controlv1.GetKeyringRequest]) (*connect.Response[controlv1.KeyringReply], error) {
	return unary(ctx, s, r, new(controlv1.KeyringReply))
}

func (s *grpcService) InstallKey(ctx context.Context, r *connect.Request[controlv1.KeyRequest]) (*connect.Response[controlv1.KeyringReply], error) {
	return unary(ctx, s, r, new(controlv1.KeyringReply))
}

func (s *grpcService) UseKey(ctx context.Context, r *connect.Request[controlv1.KeyRequest]) (*connect.Response[controlv1.KeyringReply], error) {
	return unary(ctx, s, r, new(controlv1.KeyringReply))
}

func (s *grpcService) RemoveKey(ctx context.Context, r *connect.Request[controlv1.KeyRequest]) (*connect.Response[controlv1.KeyringReply], error) {
	return unary(ctx, s, r, new(controlv1.KeyringReply))
}

func (s *grpcService) GetLeaders(ctx context.Context, r *connect.Request[controlv1.GetLeadersRequest]) (*connect.Response[controlv1.Leaders], error) {
	return unary(ctx, s, r, new(controlv1.Leaders))
}

func (s *grpcService) StepDown(ctx context.Context, r *connect.Request[controlv1.StepDownRequest]) (*connect.Response[controlv1.StepDownReply], error) {
	return unary(ctx, s, r, new(controlv1.StepDownReply))
}

func (s *grpcService) ChangeVoters(ctx context.Context, r *connect.Request[controlv1.ChangeVotersRequest]) (*connect.Response[controlv1.VotersReply], error) {
	return unary(ctx, s, r, new(controlv1.VotersReply))
}

func (s *grpcService) CreateToken(ctx context.Context, r *connect.Request[controlv1.CreateTokenRequest]) (*connect.Response[controlv1.TokenReply], error) {
	return unary(ctx, s, r, new(controlv1.TokenReply))
}

func (s *grpcService) ListShards(ctx context.Context, r *connect.Request[controlv1.ListShardsRequest]) (*connect.Response[controlv1.ShardMap], error) {
	return unary(ctx, s, r, new(controlv1.ShardMap))
}

func (s *grpcService) WatchShards(ctx context.Context, r *connect.Request[controlv1.WatchShardsRequest], st *connect.ServerStream[controlv1.ShardsEvent]) error {
	return stream(ctx, s, r, st)
}

func (s *grpcService) LookupShard(ctx context.Context, r *connect.Request[controlv1.LookupShardRequest]) (*connect.Response[controlv1.ShardLookup], error) {
	return unary(ctx, s, r, new(controlv1.ShardLookup))
}

func (s *grpcService) GetShard(ctx context.Context, r *connect.Request[controlv1.GetShardRequest]) (*connect.Response[controlv1.ShardReply], error) {
	return unary(ctx, s, r, new(controlv1.ShardReply))
}

func (s *grpcService) DrainShards(ctx context.Context, r *connect.Request[controlv1.DrainRequest]) (*connect.Response[controlv1.DrainReply], error) {
	return unary(ctx, s, r, new(controlv1.DrainReply))
}

func (s *grpcService) RebalanceShards(ctx context.Context, r *connect.Request[controlv1.RebalanceRequest]) (*connect.Response[controlv1.RebalanceReply], error) {
	return unary(ctx, s, r, new(controlv1.RebalanceReply))
}

func (s *grpcService) ListClusters(ctx context.Context, r *connect.Request[controlv1.ListClustersRequest]) (*connect.Response[controlv1.Clusters], error) {
	return unary(ctx, s, r, new(controlv1.Clusters))
}

func (s *grpcService) WatchClusters(ctx context.Context, r *connect.Request[controlv1.WatchClustersRequest], st *connect.ServerStream[controlv1.ClustersEvent]) error {
	return stream(ctx, s, r, st)
}

func (s *grpcService) PromoteCluster(ctx context.Context, r *connect.Request[controlv1.PromoteClusterRequest]) (*connect.Response[controlv1.PromoteClusterReply], error) {
	return unary(ctx, s, r, new(controlv1.PromoteClusterReply))
}

func (s *grpcService) GetCluster(ctx context.Context, r *connect.Request[controlv1.GetClusterRequest]) (*connect.Response[controlv1.ClusterDescriptor], error) {
	return unary(ctx, s, r, new(controlv1.ClusterDescriptor))
}

func (s *grpcService) Health(ctx context.Context, r *connect.Request[controlv1.HealthRequest]) (*connect.Response[controlv1.ProbeReply], error) {
	return unary(ctx, s, r, new(controlv1.ProbeReply))
}

func (s *grpcService) Ready(ctx context.Context, r *connect.Request[controlv1.ReadyRequest]) (*connect.Response[controlv1.ProbeReply], error) {
	return unary(ctx, s, r, new(controlv1.ProbeReply))
}
