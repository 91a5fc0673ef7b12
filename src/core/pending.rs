//! Work a handler leaves for the core: applied when it returns.

use super::publication::Publication;
use crate::ws::Frame;

/// What a handler asked to happen to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// A close frame with this code and reason.
    Frame(u16, String),
    /// A last text message (a `pusher:error`), then a close frame with this code and reason.
    Notice(String, u16, &'static str),
}

/// Work a handler leaves for the core: applied when it returns, in this order.
#[derive(Default)]
pub struct Pending {
    /// Connections other than the handler's own to close.
    pub closes: Vec<(usize, Closing)>,
    pub publications: Vec<Publication>,
    /// Frames for every console feed.
    pub console: Vec<Frame>,
}
