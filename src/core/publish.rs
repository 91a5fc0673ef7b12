//! The one publish path. Every source — a FIFO line, a REST call, `/internal/broadcast`, the
//! console's form, a client event, a presence change, a per-user FIFO, another node — builds
//! a [`Publication`] and hands it to [`State::publish`]; [`deliver`] is the only code that
//! queues it to subscribers. Duplicate suppression (a channel-protocol client on several of the
//! target channels gets a publication once), the cache of cache channels, the console feed and
//! the hand-over to the other nodes all live behind it.
//!
//! Encode once: each protocol's frame is built at most once per channel (a Pusher event names
//! its channel) or once per publication (the bare payload does not), and the same bytes are
//! queued to every subscriber.

use log::warn;

use std::time::Duration;

use super::cluster::{self, sequence};
use super::conns::{Conns, Mode};
use super::console;
use super::history::{Kept, Position};
use super::publication::{Origin, Publication};
use super::state::{State, Via};
use crate::channel_protocol as proto;
use crate::message::{self, Line};
use crate::pusher::protocol as pp;
use crate::ws::{self, Frame};

/// One line from the broadcast FIFO.
pub fn fifo_line(st: &mut State, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    st.stats.fifo_lines += 1;
    match message::parse_line(line) {
        Line::Global(bytes) => st.publish(Publication::Global {
            line: bytes.to_vec(),
            origin: Origin::Here("fifo"),
        }),
        Line::Publish(p) => {
            let app = match p.app.as_deref() {
                None => 0,
                Some(id) => match st.apps.by_id(id) {
                    Some(app) => app,
                    None => return warn!("ignored a FIFO line for unknown app \"{id}\""),
                },
            };
            st.publish(Publication::Event {
                app,
                channels: p.channels,
                event: p.event.unwrap_or_else(|| "message".into()),
                data: p.data,
                except: p.socket_id,
                origin: Origin::Here("fifo"),
            });
        }
        Line::Invalid(why) => warn!("ignored a FIFO line: {why}"),
    }
}

/// Delivers a publication to this node's subscribers, and to the other nodes when it
/// started here.
pub fn deliver(conns: &mut Conns, st: &mut State, p: Publication) {
    match p {
        p @ Publication::Event { .. } => event(conns, st, p),
        p @ Publication::Numbered { .. } => {
            if let Some(out) = Outgoing::of(&p) {
                event_here(conns, st, &out);
            }
        }
        Publication::Frame {
            app,
            channel,
            frame,
            except,
            to_nodes,
        } => {
            if let Some(ch) = st.hub.channel_named(app, &channel) {
                let keys = ch.subscribers().iter().map(|s| s.key());
                let sent = fan_out(conns, keys.filter(|&k| Some(k) != except), &frame);
                st.stats.frames_out += sent;
            }
            if to_nodes {
                cluster::frame(st, app, channel, &frame);
            }
        }
        Publication::Global { line, origin } => {
            let frame = ws::text_lossy(&line);
            let sent = fan_out(conns, st.hub.global(), &frame);
            st.stats.frames_out += sent;
            if origin != Origin::Node {
                cluster::global(st, &line);
                console::event(
                    st,
                    "publish",
                    None,
                    None,
                    None,
                    Some("fifo, to every client"),
                );
            }
        }
        Publication::Watch { app, user, online } => {
            let (on, off) = if online {
                (&[user.as_str()][..], &[][..])
            } else {
                (&[][..], &[user.as_str()][..])
            };
            let frame = ws::text(pp::watchlist_events(on, off).as_bytes());
            let keys: Vec<usize> = st.watchers.of(app, &user).collect();
            st.stats.frames_out += fan_out(conns, keys.into_iter(), &frame);
        }
        Publication::User {
            user,
            frame,
            origin,
        } => {
            if matches!(origin, Origin::Here(_)) {
                cluster::user(st, &user, &frame);
            }
            let sent = fan_out(
                conns,
                st.sessions
                    .of_user(0, &user, Via::Validation)
                    .iter()
                    .copied(),
                &frame,
            );
            st.stats.frames_out += sent;
        }
    }
}

/// An event on channels: delivered here, and handed to the other nodes when it started here —
/// or, on channels with history in a cluster, handed to Redis to be numbered first.
fn event(conns: &mut Conns, st: &mut State, p: Publication) {
    let Publication::Event {
        app,
        ref channels,
        ref event,
        origin,
        ..
    } = p
    else {
        return;
    };
    if let Origin::Here(source) = origin {
        for name in channels {
            console::event(st, "publish", None, Some(name), Some(event), Some(source));
        }
        if sequence::wanted(st, app, channels) {
            return sequence::submit(st, p);
        }
    }
    if let Some(out) = Outgoing::of(&p) {
        event_here(conns, st, &out);
    }
    if let Publication::Event {
        channels,
        event,
        data,
        except,
        origin: Origin::Here(_) | Origin::Unnumbered,
        ..
    } = p
    {
        cluster::publish(st, app, channels, event, data, except);
    }
}

/// A frame for the Pusher-protocol subscribers of one channel of this node (what only that
/// protocol understands, like `pusher_internal:subscription_count`).
pub fn to_pusher_subscribers(
    conns: &mut Conns,
    st: &mut State,
    app: usize,
    channel: &str,
    frame: &Frame,
) {
    let Some(ch) = st.hub.channel_named(app, channel) else {
        return;
    };
    let mut sent = 0;
    for key in ch.subscribers().iter().map(|s| s.key()) {
        if conns.get(key).is_some_and(|c| c.mode == Mode::Pusher) {
            sent += u64::from(conns.send(key, frame));
        }
    }
    st.stats.frames_out += sent;
}

/// Keeps a publication in its channel's history, when the app's rules give it one: its
/// position (`placed`: the one Redis gave it; otherwise this node numbers it), and the bare
/// frame (encoded here once, shared with the subscribers' queues).
fn keep(
    st: &mut State,
    out: &Outgoing<'_>,
    channel: &str,
    placed: Option<&Position>,
) -> Option<(Position, Frame)> {
    let (app, ch) = (out.app as u16, channel);
    let rule = st.apps.get(out.app).cfg.history_rule(channel)?;
    let (size, ttl) = (rule.size, Duration::from_secs(rule.ttl_secs));
    let plain = ws::text(out.data.as_bytes());
    let position = match placed {
        Some(at) if !st.history.place(app, ch, at, (size, ttl)) => {
            // A repeat of what this node has: given live again (clients drop it by offset).
            return Some((at.clone(), plain));
        }
        Some(at) => at.clone(),
        None => st.history.next_position(app, ch, size, ttl),
    };
    let kept = Kept {
        offset: position.offset,
        event: out.event.into(),
        plain: plain.clone(),
    };
    let now = st.clock.now();
    let hub = &st.hub;
    let occupied = |app: u16, channel: &str| hub.lookup(app as usize, channel).is_some();
    st.history.append(app, ch, kept, now, &occupied);
    Some((position, plain))
}

/// An event on its way to this node's subscribers.
struct Outgoing<'a> {
    app: usize,
    channels: &'a [String],
    event: &'a str,
    data: &'a str,
    /// The socket id of the connection to leave out.
    except: Option<&'a str>,
    /// Positions Redis gave it, per channel with history (empty: this node numbers it).
    positions: &'a [(String, Position)],
}

impl Outgoing<'_> {
    fn of(p: &Publication) -> Option<Outgoing<'_>> {
        let (app, channels, event, data, except, positions) = match p {
            Publication::Event {
                app,
                channels,
                event,
                data,
                except,
                ..
            } => (app, channels, event, data, except, &[][..]),
            Publication::Numbered {
                app,
                channels,
                event,
                data,
                except,
                positions,
            } => (app, channels, event, data, except, &positions[..]),
            _ => return None,
        };
        Some(Outgoing {
            app: *app,
            channels,
            event,
            data,
            except: except.as_deref(),
            positions,
        })
    }
}

/// Keeps the event of a cache channel as its last one; the Pusher frame made for it.
fn cache(
    st: &mut State,
    app: usize,
    channel: &str,
    event: &str,
    data: &str,
    now: std::time::Instant,
) -> Option<Frame> {
    if !pp::is_cache_channel(channel) {
        return None;
    }
    let frame = ws::text(pp::event(event, channel, data, None).as_bytes());
    st.hub
        .cache_mut()
        .insert(app as u16, channel, frame.clone(), now);
    Some(frame)
}

/// Queues `frame` to each connection within its bound; returns how many got it.
fn fan_out(conns: &mut Conns, keys: impl Iterator<Item = usize>, frame: &Frame) -> u64 {
    keys.map(|k| u64::from(conns.send(k, frame))).sum()
}

/// An event to this node's subscribers of its channels, as one publication.
fn event_here(conns: &mut Conns, st: &mut State, out: &Outgoing<'_>) {
    let (app, event, data) = (out.app, out.event, out.data);
    // The connection to leave out may be ours even when the event entered through another
    // node (the app's REST call went there).
    let except = out.except.and_then(|s| st.parse_socket_id(s));
    let mut plain: Option<Frame> = None;
    st.publish_stamp = st.publish_stamp.wrapping_add(1);
    let stamp = st.publish_stamp;
    let now = st.clock.now();
    for channel in out.channels {
        let mut named = cache(st, app, channel, event, data, now);
        let placed = out.positions.iter().find(|(c, _)| c == channel);
        let kept = keep(st, out, channel, placed.map(|(_, at)| at));
        if let Some((_, bare)) = &kept {
            plain.get_or_insert_with(|| bare.clone());
        }
        // For clients with positions (channels with history), made on first need.
        let (mut positioned, mut next): (Option<Frame>, Option<Frame>) = (None, None);
        let Some(ch) = st.hub.channel_named(app, channel) else {
            continue;
        };
        let mut sent = 0u64;
        for key in ch.subscribers().iter().map(|s| s.key()) {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if Some(conn.id) == except {
                // The connection that caused it does not get it back; with positions it is
                // told the stream moved past it, so it does not take the skip for a loss.
                if let (Mode::Pusher, true, Some((at, _))) = (conn.mode, conn.positions, &kept) {
                    let past =
                        ws::text(pp::position(channel, &at.epoch, "at", at.offset).as_bytes());
                    conns.send(key, &past);
                }
                continue;
            }
            // Pusher clients with positions learn the offset of what follows first.
            let before = match (conn.mode, conn.positions, &kept) {
                (Mode::Pusher, true, Some((at, _))) => Some(
                    next.get_or_insert_with(|| {
                        ws::text(pp::position(channel, &at.epoch, "next", at.offset).as_bytes())
                    })
                    .clone(),
                ),
                _ => None,
            };
            let frame = match (conn.mode, &kept) {
                // Pusher events name their channel: one per channel is right.
                (Mode::Pusher, _) => named.get_or_insert_with(|| {
                    ws::text(pp::event(event, channel, data, None).as_bytes())
                }),
                // Positions are per channel: one per channel too.
                (Mode::Channel, Some((at, _))) if conn.positions => {
                    positioned.get_or_insert_with(|| {
                        let text = proto::positioned(channel, data, &at.epoch, at.offset);
                        ws::text(text.as_bytes())
                    })
                }
                // The bare payload does not: sent once per publication.
                (_, _) => {
                    if conn.publish_stamp == stamp {
                        continue;
                    }
                    conn.publish_stamp = stamp;
                    plain.get_or_insert_with(|| ws::text(data.as_bytes()))
                }
            };
            if let Some(next) = &before {
                conns.send(key, next);
            }
            sent += u64::from(conns.send(key, frame));
        }
        st.stats.frames_out += sent;
    }
}
