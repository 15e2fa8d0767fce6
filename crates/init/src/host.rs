//! The connection to the Strata server: connect (with retry), and send frames from any thread.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::{encode_frame, Header};

/// The sending half of the host socket. Each frame is written whole under a lock, so frames from
/// different threads never interleave, and frames sent by one thread arrive in order.
#[derive(Debug)]
pub(crate) struct HostLink {
    writer: Mutex<UnixStream>,
}

impl HostLink {
    /// Connects to the server's socket, retrying while it does not exist or refuses connections
    /// until `patience` has passed. Returns the link and a stream to read frames from.
    pub(crate) fn connect(path: &Path, patience: Duration) -> io::Result<(HostLink, UnixStream)> {
        let give_up = Instant::now() + patience;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        let reader = stream.try_clone()?;
        Ok((
            HostLink {
                writer: Mutex::new(stream),
            },
            reader,
        ))
    }

    /// Sends one frame.
    pub(crate) fn send(&self, header: &Header, body: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let frame = encode_frame(header, body)?;
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.write_all(&frame)
    }

    /// Sends one frame; a failure is reported on stderr only (a closed socket is noticed by the
    /// reader, which ends the agent).
    pub(crate) fn send_or_warn(&self, header: &Header, body: &[u8]) {
        if let Err(e) = self.send(header, body) {
            eprintln!("strata-init: cannot send a frame to the host: {e}");
        }
    }
}
