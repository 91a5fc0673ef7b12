//! FastCGI, the client side: what ferrocast sends a FastCGI application (php-fpm) and how it
//! reads the answer. Plain bytes in and out, no sockets: the loop owns those.
//!
//! One request per connection at a time (php-fpm serves a connection that way), always with
//! request id 1 and `FCGI_KEEP_CONN`, so a connection is reused for the next request.

pub mod cgi;
pub mod record;
pub mod reply;

pub use cgi::{CgiError, CgiResponse, parse_response};
pub use record::{PairTooLong, RecordError, encode_abort, encode_pairs, encode_request};
pub use reply::{End, Reply};
