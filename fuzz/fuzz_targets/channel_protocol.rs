//! Channel-protocol client messages (`/ws`): `channel_protocol::parse`.
#![no_main]

use ferrocast::channel_protocol::{self, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server only parses text frames, which are valid UTF-8 by then.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match channel_protocol::parse(text) {
        Ok(Request::Subscribe(c)) | Ok(Request::Unsubscribe(c)) => {
            assert!(
                ferrocast::channels::valid_name(&c),
                "accepted invalid name {c:?}"
            );
            let _ = channel_protocol::subscribed(&c, "1.2");
            let _ = channel_protocol::unsubscribed(&c);
        }
        Ok(Request::Ping) => {}
        Err(e) => {
            // The error goes back to the client: it must stay bounded whatever the input.
            assert!(e.len() <= 1024, "error reply of {} bytes", e.len());
            let reply = channel_protocol::error(&e);
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
    }
});
