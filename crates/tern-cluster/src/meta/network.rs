//! The metadata group's transport. With one member there is nobody to talk to ([`NoPeers`]:
//! any call is answered "unreachable"; openraft makes none). In a cluster, [`LinkNetwork`]
//! carries the RPCs over the node links, and [`serve`] answers the ones that come in.

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};

use super::rpc::{decode_request, decode_response, encode_request, encode_response};
use super::rpc::{RaftRequest, RaftResponse};
use super::{NodeId, TypeConfig};
use crate::nodes::Nodes;
use crate::wire::Service;

pub struct NoPeers;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    let e = std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no peers in a one-node group",
    );
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

/// The metadata group's transport between nodes: an RPC to a member is a
/// `Service::Raft { group: META_GROUP }` call on the link to the node its `BasicNode::addr`
/// names (the node name). No link is "unreachable" (openraft backs off); a link that fails
/// the call is a network error; the deadline is the one openraft gives.
#[derive(Clone)]
pub struct LinkNetwork {
    pub nodes: Nodes,
}

pub struct LinkClient {
    nodes: Nodes,
    node_name: String,
}

/// The metadata group's number in `Service::Raft` calls (quorum queues get others).
pub const META_GROUP: u64 = 0;

impl RaftNetworkFactory<TypeConfig> for LinkNetwork {
    type Network = LinkClient;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> LinkClient {
        LinkClient {
            nodes: self.nodes.clone(),
            node_name: node.addr.clone(),
        }
    }
}

impl LinkClient {
    async fn send<E: std::error::Error>(
        &self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, RPCError<NodeId, BasicNode, E>> {
        let Some(link) = self.nodes.link(&self.node_name) else {
            let e = std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no link to {}", self.node_name),
            );
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let service = Service::Raft { group: META_GROUP };
        let body = link
            .call(service, encode_request(&request), option.hard_ttl())
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decode_response(body).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

fn wrong_kind<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    let e = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a Raft answer of another kind than the call",
    );
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for LinkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(RaftRequest::Append(rpc), &option).await? {
            RaftResponse::Append(r) => Ok(r),
            _ => Err(wrong_kind()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.send(RaftRequest::Snapshot(rpc), &option).await? {
            RaftResponse::Snapshot(r) => Ok(r),
            _ => Err(wrong_kind()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(RaftRequest::Vote(rpc), &option).await? {
            RaftResponse::Vote(r) => Ok(r),
            _ => Err(wrong_kind()),
        }
    }
}

/// Answer a peer's Raft call to this node's metadata group: the encoded response, or why not.
pub async fn serve(raft: &Raft<TypeConfig>, body: Bytes) -> Result<Bytes, String> {
    let response = match decode_request(body).map_err(|e| e.to_string())? {
        RaftRequest::Append(r) => RaftResponse::Append(raft.append_entries(r).await.map_err(text)?),
        RaftRequest::Vote(r) => RaftResponse::Vote(raft.vote(r).await.map_err(text)?),
        RaftRequest::Snapshot(r) => {
            RaftResponse::Snapshot(raft.install_snapshot(r).await.map_err(text)?)
        }
    };
    Ok(encode_response(&response))
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
