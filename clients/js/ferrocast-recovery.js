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

export function enableRecovery(pusher) {
  // channel -> { epoch, offset }: every event up to `offset` was received.
  const done = new Map();
  // channel -> { epoch, offset }: the offset of the event announced next.
  const next = new Map();

  pusher.connection.bind('message', (msg) => {
    if (!msg || typeof msg.channel !== 'string' || typeof msg.event !== 'string') return;
    if (msg.event === POSITION) {
      const d = typeof msg.data === 'string' ? JSON.parse(msg.data) : msg.data;
      if (d && typeof d.next === 'number') next.set(msg.channel, { epoch: d.epoch, offset: d.next });
      if (d && typeof d.at === 'number') {
        done.set(msg.channel, { epoch: d.epoch, offset: d.at });
        next.delete(msg.channel);
      }
      return;
    }
    if (msg.event.startsWith('pusher:') || msg.event.startsWith('pusher_internal:')) return;
    const announced = next.get(msg.channel);
    if (announced) {
      done.set(msg.channel, announced);
      next.delete(msg.channel);
    }
  });

  const send = pusher.send_event.bind(pusher);
  pusher.send_event = (event, data, channel) => {
    if (event === 'pusher:subscribe' && data && typeof data.channel === 'string') {
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
