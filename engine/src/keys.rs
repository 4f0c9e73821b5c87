//! Key layouts. Every integer is big-endian so keys sort by it; a channel name is
//! length-prefixed (2 bytes) so one name is never a prefix of another's keys.

use tether_core::wire::{ChannelName, MessageId, SessionId};

fn name_part(out: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

/// Reads a length-prefixed name at the start of `bytes`: the name and what follows.
fn read_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?));
    let name = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((name, &bytes[2 + len..]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// `channels`: the channel's name.
pub(crate) fn channel(name: &ChannelName) -> Vec<u8> {
    name.as_str().as_bytes().to_vec()
}

/// The channel a `channels` key names.
pub(crate) fn channel_name(key: &[u8]) -> Option<ChannelName> {
    ChannelName::new(std::str::from_utf8(key).ok()?).ok()
}

/// `messages`: every key of a channel starts with this.
pub(crate) fn messages_of_channel(name: &ChannelName) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.as_str().len() + 18);
    name_part(&mut key, name.as_str());
    key
}

/// `messages`: the keys of one epoch of a channel start with this.
pub(crate) fn messages_of(name: &ChannelName, epoch: u64) -> Vec<u8> {
    let mut key = messages_of_channel(name);
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// `messages`: one message.
pub(crate) fn message(name: &ChannelName, epoch: u64, serial: u64) -> Vec<u8> {
    let mut key = messages_of(name, epoch);
    key.extend_from_slice(&serial.to_be_bytes());
    key
}

/// `ids`: a message id stored at `unix_ms` in a channel.
pub(crate) fn id(unix_ms: u64, channel: &ChannelName, id: &MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + channel.as_str().len() + id.as_str().len());
    key.extend_from_slice(&unix_ms.to_be_bytes());
    name_part(&mut key, channel.as_str());
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// `ids`: the first key at or after `unix_ms`.
pub(crate) fn id_from(unix_ms: u64) -> Vec<u8> {
    unix_ms.to_be_bytes().to_vec()
}

/// The parts of an `ids` key.
pub(crate) fn id_parts(key: &[u8]) -> Option<(u64, ChannelName, MessageId)> {
    let unix_ms = u64_at(key, 0)?;
    let (name, rest) = read_name(key.get(8..)?)?;
    let id = MessageId::new(std::str::from_utf8(rest).ok()?).ok()?;
    Some((unix_ms, ChannelName::new(name).ok()?, id))
}

/// `sessions`, and the prefix of a session's `records`.
pub(crate) fn session(id: SessionId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// `records`: one publish outcome of a session.
pub(crate) fn record(session: SessionId, serial: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&session.0.to_be_bytes());
    key[8..].copy_from_slice(&serial.to_be_bytes());
    key
}

/// The serial of a `records` key.
pub(crate) fn record_serial(key: &[u8]) -> Option<u64> {
    u64_at(key, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_and_sort_by_their_numbers() {
        let name = ChannelName::new("chat:a").expect("valid");
        let id_key = id(42, &name, &MessageId::new("m-1").expect("valid"));
        let (at, in_channel, message_id) = id_parts(&id_key).expect("parts");
        assert_eq!(
            (at, in_channel.as_str(), message_id.as_str()),
            (42, "chat:a", "m-1")
        );
        assert!(id_from(41) < id_key && id_key < id_from(43));
        assert!(message(&name, 7, 255) < message(&name, 7, 256));
        // "chat:a" is not a prefix of "chat:ab"'s keys.
        let longer = ChannelName::new("chat:ab").expect("valid");
        assert!(!message(&longer, 7, 1).starts_with(&messages_of_channel(&name)));
        assert_eq!(record_serial(&record(SessionId(3), 9)), Some(9));
        assert_eq!(channel_name(&channel(&name)), Some(name));
    }
}
