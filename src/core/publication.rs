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
