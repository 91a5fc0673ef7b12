//! What every source of a message builds: one publication, for the one publish path
//! (`publish.rs`).

use super::history::Position;
use crate::ws::Frame;

/// Where a publication comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This node; the name of the source, for the console ("fifo", "rest", ...).
    Here(&'static str),
    /// Another node published it (and told every node itself).
    Node,
    /// Made here for channels with history, but Redis could not number it: delivered here
    /// only, numbered by this node alone (the other nodes cannot be reached either).
    Alone,
    /// Made here; Redis refused to number it: delivered here, and to the other nodes as a
    /// plain publication.
    Unnumbered,
}

#[derive(Debug, Clone)]
pub enum Publication {
    /// An event for channels of an app. `except` is the socket id of the connection that
    /// caused it, wherever that connection lives.
    Event {
        app: usize,
        channels: Vec<String>,
        event: String,
        data: String,
        except: Option<String>,
        origin: Origin,
    },
    /// An event Redis numbered in its channels' streams (`cluster/sequence.rs`): delivered on
    /// every node, its origin included, with these positions (channels with history).
    Numbered {
        app: usize,
        channels: Vec<String>,
        event: String,
        data: String,
        except: Option<String>,
        positions: Vec<(String, Position)>,
    },
    /// A frame in its final form for one channel's subscribers but one connection (client
    /// events, presence events). `to_nodes`: the other nodes' subscribers get it too.
    Frame {
        app: usize,
        channel: String,
        frame: Frame,
        except: Option<usize>,
        to_nodes: bool,
    },
    /// A line for every raw-mode and channel-mode client (CarbonPHP's global pipe).
    Global { line: Vec<u8>, origin: Origin },
    /// A message for every connection of a validated user (per-user FIFOs). One read here goes
    /// to the other nodes and loops too (`Origin::Here`); theirs arrive as `Origin::Node`.
    User {
        user: String,
        frame: Frame,
        origin: Origin,
    },
    /// `user` of `app` came online (or went offline) in the cluster: for the connections
    /// watching them.
    Watch {
        app: usize,
        user: String,
        online: bool,
    },
}

impl Publication {
    /// Read from the broadcast FIFO or a user's here: with several loops, it goes out after
    /// what the other loops published before it was written (`barrier.rs`).
    pub fn from_fifo(&self) -> bool {
        match self {
            Publication::Event { origin, .. }
            | Publication::Global { origin, .. }
            | Publication::User { origin, .. } => {
                matches!(origin, Origin::Here("fifo" | "user_fifo"))
            }
            _ => false,
        }
    }

    /// Made by this loop (not relayed from another, nor told again after Redis answered): it
    /// goes out in the order it was made.
    pub fn made_here(&self) -> bool {
        match self {
            Publication::Event { origin, .. }
            | Publication::Global { origin, .. }
            | Publication::User { origin, .. } => matches!(origin, Origin::Here(_)),
            Publication::Frame { to_nodes, .. } => *to_nodes,
            Publication::Numbered { .. } | Publication::Watch { .. } => false,
        }
    }

    /// About how many bytes it holds (for the bound on what waits).
    pub fn weight(&self) -> usize {
        match self {
            Publication::Event { data, channels, .. } => data.len() + 32 * channels.len(),
            Publication::Numbered { data, .. } => data.len(),
            Publication::Frame { frame, .. } | Publication::User { frame, .. } => frame.len(),
            Publication::Global { line, .. } => line.len(),
            Publication::Watch { user, .. } => user.len(),
        }
    }

    pub fn frame(
        app: usize,
        channel: &str,
        frame: Frame,
        except: Option<usize>,
        to_nodes: bool,
    ) -> Publication {
        Publication::Frame {
            app,
            channel: channel.to_string(),
            frame,
            except,
            to_nodes,
        }
    }
}
