// ferrocast-recovery.js: no message lost across a reconnect, for stock pusher-js and Laravel Echo.
//
//   import { enableRecovery } from './ferrocast-recovery.js';
//   const pusher = new Pusher(key, options);          // or: window.Echo.connector.pusher
//   enableRecovery(pusher);
//   channel.bind('ferrocast:recovery_failed', () => reloadWhatTheChannelShows());
//
// On channels with history (the app's `history` rules in ferrocast's configuration), ferrocast
// tells this script, beside each event, where the event sits in the channel's stream. After a
// reconnect pusher-js subscribes again by itself; this script adds to that subscription the last
// position it saw complete, and ferrocast sends every event published meanwhile, in order and
// once, through the channel's normal callbacks, before anything live. When its history no longer
// covers the gap, the channel gets a `ferrocast:recovery_failed` event instead: never silence.
//
// No dependencies, no build step: an ES module that only wraps `pusher.send_event` and listens
// to the connection's messages. Without it pusher-js works as before.

const POSITION = 'pusher_internal:ferrocast_position';
const FAILED = 'ferrocast:recovery_failed';

export function enableRecovery(pusher) {
  // channel -> { epoch, offset }: every event up to `offset` was received.
  const done = new Map();
  // channel -> { epoch, offset }: the offset of the event announced next.
  const next = new Map();
  const guarded = new WeakSet();

  // Positions only move forward within an epoch: what a client saw on one node of a cluster may
  // still be on its way to the next one.
  const advance = (channel, at) => {
    const have = done.get(channel);
    if (!have || have.epoch !== at.epoch || at.offset > have.offset) done.set(channel, at);
  };

  pusher.connection.bind('message', (msg) => {
    if (!msg || typeof msg.channel !== 'string' || typeof msg.event !== 'string') return;
    if (msg.event === POSITION) {
      const d = typeof msg.data === 'string' ? JSON.parse(msg.data) : msg.data;
      if (d && typeof d.next === 'number') next.set(msg.channel, { epoch: d.epoch, offset: d.next });
      if (d && typeof d.at === 'number') {
        advance(msg.channel, { epoch: d.epoch, offset: d.at });
        next.delete(msg.channel);
      }
      return;
    }
    if (msg.event.startsWith('pusher:') || msg.event.startsWith('pusher_internal:')) return;
    const announced = next.get(msg.channel);
    if (announced) {
      advance(msg.channel, announced);
      next.delete(msg.channel);
    }
  });

  // pusher-js hands a channel its events before this script's connection listener runs, so the
  // channel's own handler decides first whether an event is a repeat (an offset already
  // received: dropped) or follows a gap (offsets skipped, or a new epoch while subscribed: the
  // channel gets `ferrocast:recovery_failed` first, then the event).
  const guard = (channel) => {
    if (!channel || guarded.has(channel) || typeof channel.handleEvent !== 'function') return;
    guarded.add(channel);
    const handle = channel.handleEvent.bind(channel);
    channel.handleEvent = (event) => {
      const name = channel.name;
      const live = event && typeof event.event === 'string' && !event.event.startsWith('pusher');
      const announced = live ? next.get(name) : undefined;
      const have = announced ? done.get(name) : undefined;
      if (announced && have) {
        if (announced.epoch === have.epoch && announced.offset <= have.offset) return;
        if (announced.epoch !== have.epoch || announced.offset > have.offset + 1) {
          const data = { epoch: announced.epoch, offset: announced.offset - 1 };
          handle({ event: FAILED, channel: name, data });
        }
      }
      handle(event);
    };
  };

  const send = pusher.send_event.bind(pusher);
  pusher.send_event = (event, data, channel) => {
    if (event === 'pusher:subscribe' && data && typeof data.channel === 'string') {
      guard(pusher.channel(data.channel));
      const from = done.get(data.channel);
      data = { ...data, positions: true };
      if (from) data.recover = { epoch: from.epoch, offset: from.offset };
    } else if (event === 'pusher:unsubscribe' && data && typeof data.channel === 'string') {
      done.delete(data.channel);
      next.delete(data.channel);
    }
    return send(event, data, channel);
  };
  return {
    /** The last complete position per channel (for tests and diagnostics). */
    positions: () => new Map(done),
  };
}
