//! The manager's private socket, read through zbus.
//!
//! On a direct connection systemd marks every message it sends with the sender
//! `org.freedesktop.systemd1` (src/core/dbus.c, `sd_bus_set_sender`). The D-Bus
//! specification leaves the meaning of that field to a server that is not a message bus,
//! but zbus (5.11 and later) accepts only unique names there and panics when it reads the
//! header back (zbus issue #1497, open). This reader sits between the socket and zbus: it
//! rewrites that one sender, in place and at the same length, to `:org.freedesktop.systemd`,
//! a valid unique name, and hands every other message through untouched.

use std::os::fd::OwnedFd;

use zbus::{
    Message,
    connection::socket::{BoxedSplit, ReadHalf, Split},
    zvariant::{Endian, serialized},
};

/// What systemd writes as the sender on its private socket, and what zbus is shown instead.
const SENT: &[u8] = b"org.freedesktop.systemd1";
const SHOWN: &[u8] = b":org.freedesktop.systemd";
/// The header field that holds the sender (D-Bus specification, "Header Fields").
const SENDER_FIELD: u8 = 7;

#[derive(Debug)]
struct SystemdReader(Box<dyn ReadHalf>);

#[async_trait::async_trait]
impl ReadHalf for SystemdReader {
    async fn receive_message(
        &mut self,
        seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        let msg = self
            .0
            .receive_message(seq, already_received_bytes, already_received_fds)
            .await?;
        let Some(bytes) = with_unique_sender(msg.data()) else {
            return Ok(msg);
        };
        let endian = if bytes[0] == b'B' {
            Endian::Big
        } else {
            Endian::Little
        };
        let data = serialized::Data::new(bytes, serialized::Context::new_dbus(endian, 0));
        // SAFETY: the bytes are a message zbus has just framed, with one string of the
        // header replaced by another of the same length; no file descriptors are asked for
        // on this connection.
        unsafe { Message::from_bytes(data) }
    }

    async fn recvmsg(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
        self.0.recvmsg(buf).await
    }

    fn can_pass_unix_fd(&self) -> bool {
        self.0.can_pass_unix_fd()
    }

    async fn peer_credentials(&mut self) -> std::io::Result<zbus::fdo::ConnectionCredentials> {
        self.0.peer_credentials().await
    }
}

/// `socket`, with systemd's sender made readable to zbus.
pub fn split(socket: tokio::net::UnixStream) -> BoxedSplit {
    let (read, write) = BoxedSplit::from(socket).take();
    Split::new(Box::new(SystemdReader(read)), write)
}

/// The message with systemd's sender rewritten, or `None` when it has another sender (or
/// none) and needs nothing.
fn with_unique_sender(msg: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = msg.get(at..at + 4)?.try_into().ok()?;
        Some(match msg[0] {
            b'B' => u32::from_be_bytes(raw),
            _ => u32::from_le_bytes(raw),
        } as usize)
    };
    // The fixed part: endianness, type, flags, version, body length, serial, then the
    // length of the header fields, an array of (code, variant) structs, each 8-aligned.
    let fields_end = 16usize.checked_add(u32_at(12)?)?;
    let mut at = 16;
    while at < fields_end {
        at = at.next_multiple_of(8);
        let code = *msg.get(at)?;
        let sig_len = usize::from(*msg.get(at + 1)?);
        let sig = msg.get(at + 2..at + 2 + sig_len)?;
        at += 2 + sig_len + 1;
        match sig {
            b"s" | b"o" => {
                at = at.next_multiple_of(4);
                let len = u32_at(at)?;
                let start = at + 4;
                let value = msg.get(start..start + len)?;
                if code == SENDER_FIELD {
                    if value != SENT {
                        return None;
                    }
                    let mut patched = msg.to_vec();
                    patched[start..start + len].copy_from_slice(SHOWN);
                    return Some(patched);
                }
                at = start + len + 1;
            }
            b"g" => at += usize::from(*msg.get(at)?) + 2,
            b"u" => at = at.next_multiple_of(4) + 4,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal as systemd sends it on its private socket: zbus cannot build one with that
    /// sender, so it is built with a name of the same length and rewritten.
    fn as_systemd_sends(msg: &Message) -> Vec<u8> {
        let mut bytes = msg.data().to_vec();
        let at = bytes
            .windows(SHOWN.len())
            .position(|w| w == SHOWN)
            .expect("the sender in the header");
        bytes[at..at + SHOWN.len()].copy_from_slice(SENT);
        bytes
    }

    fn signal(sender: &str) -> Message {
        Message::signal(
            "/org/freedesktop/systemd1/unit/a_2eservice",
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
        )
        .unwrap()
        .sender(sender)
        .unwrap()
        .build(&("org.freedesktop.systemd1.Unit",))
        .unwrap()
    }

    #[test]
    fn systemds_sender_is_rewritten_at_the_same_length_and_the_message_reads_back() {
        let sent = as_systemd_sends(&signal(":org.freedesktop.systemd"));
        let patched = with_unique_sender(&sent).expect("rewritten");
        assert_eq!(patched.len(), sent.len());
        let data = serialized::Data::new(patched, serialized::Context::new_dbus(Endian::Little, 0));
        let msg = unsafe { Message::from_bytes(data) }.unwrap();
        let header = msg.header();
        assert_eq!(
            header.sender().unwrap().as_str(),
            ":org.freedesktop.systemd"
        );
        assert_eq!(header.member().unwrap().as_str(), "PropertiesChanged");
        assert_eq!(
            msg.body().deserialize::<(String,)>().unwrap().0,
            "org.freedesktop.systemd1.Unit"
        );
    }

    #[test]
    fn any_other_sender_or_none_is_left_alone() {
        assert_eq!(with_unique_sender(signal(":1.42").data()), None);
        let no_sender = Message::method_call("/", "Ping")
            .unwrap()
            .build(&())
            .unwrap();
        assert_eq!(with_unique_sender(no_sender.data()), None);
        assert_eq!(
            with_unique_sender(b"l\x01"),
            None,
            "a short buffer is no panic"
        );
    }
}
