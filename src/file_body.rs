//! Reading a file body in pieces on the runtime's blocking pool (or, on a
//! plain socket, handing a regular file's pieces to sendfile(2): see
//! `proto::h1::output`).
//!
//! A regular file is read at its own position (`pread`), never through the
//! descriptor's offset: a handle the app passed as `fh` is a duplicate that
//! shares that offset with the app's handle, and Perl moves it when the app
//! closes or reads its handle after `$send` returned.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::abi::level;
use crate::bridge::queue::Bridge;

/// The piece size protocols read file bodies in.
pub const PIECE: usize = 64 * 1024;

/// A file body still to be read.
pub struct FileBody {
    file: Arc<File>,
    /// Where the next piece starts; None for pipes and sockets, read in turn.
    pos: Option<u64>,
    left: u64,
}

impl FileBody {
    /// `start`: the position taken when the app sent the body (None: not
    /// seekable); `len`: at most this many bytes (None: to the end).
    pub fn new(file: File, start: Option<u64>, len: Option<u64>) -> FileBody {
        FileBody {
            file: Arc::new(file),
            pos: start,
            left: len.unwrap_or(u64::MAX),
        }
    }

    /// Reads the next piece into `buf` (resized to what was read; empty at
    /// the end of the body).
    pub async fn next(&mut self, mut buf: Vec<u8>, max: usize) -> io::Result<Vec<u8>> {
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(max);
        if want == 0 {
            buf.clear();
            return Ok(buf);
        }
        let (file, pos) = (self.file.clone(), self.pos);
        let buf = tokio::task::spawn_blocking(move || {
            buf.resize(want, 0);
            let n = loop {
                let r = match pos {
                    Some(p) => file.read_at(&mut buf, p),
                    None => (&*file).read(&mut buf),
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            buf.truncate(n);
            Ok::<_, io::Error>(buf)
        })
        .await
        .map_err(io::Error::other)??;
        self.left -= buf.len() as u64;
        if let Some(p) = self.pos.as_mut() {
            *p += buf.len() as u64;
        }
        Ok(buf)
    }

    /// A regular file (read at its own position), for sendfile(2): the
    /// file, where the next byte is, and how many bytes are left to send
    /// now (what the app's `length` allows and the file still holds).
    /// None for pipes and sockets, and when the file cannot be stat'ed.
    pub fn regular(&self) -> Option<(&Arc<File>, u64, u64)> {
        let pos = self.pos?;
        let size = self.file.metadata().ok()?.len();
        Some((&self.file, pos, size.saturating_sub(pos).min(self.left)))
    }

    /// `n` bytes of a regular file went out by other means than `next`.
    pub fn advance(&mut self, n: u64) {
        self.left = self.left.saturating_sub(n);
        if let Some(p) = self.pos.as_mut() {
            *p += n;
        }
    }

    /// The next piece of at most `PIECE` bytes (empty at the end), or None
    /// once a read failed, which is logged: the response cannot go on.
    pub async fn next_piece(&mut self, buf: Vec<u8>, bridge: &Bridge) -> Option<Vec<u8>> {
        match self.next(buf, PIECE).await {
            Ok(p) => Some(p),
            Err(e) => {
                bridge.log(
                    level::ERROR,
                    &format!("PAGI::Server: reading the file body failed: {e}"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[tokio::test]
    async fn reads_from_its_own_position_whatever_the_descriptor_does() {
        let path = std::env::temp_dir().join(format!("pagi-file-body-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"0123456789"))
            .expect("fixture");
        let f = File::open(&path).expect("open");
        let shared = f.try_clone().expect("dup");
        let mut body = FileBody::new(f, Some(3), Some(5));
        let a = body.next(Vec::new(), 2).await.expect("read");
        assert_eq!(a, b"34");
        // The app's handle moves the shared offset: the body does not care.
        (&shared).seek(SeekFrom::Start(0)).expect("seek");
        let b = body.next(a, 64).await.expect("read");
        assert_eq!(b, b"567");
        assert!(body.next(b, 64).await.expect("end").is_empty());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_regular_file_tells_what_is_left_to_send() {
        let path = std::env::temp_dir().join(format!("pagi-file-left-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"0123456789"))
            .expect("fixture");
        let open = || File::open(&path).expect("open");
        let mut body = FileBody::new(open(), Some(3), Some(5));
        assert_eq!(body.regular().map(|(_, p, l)| (p, l)), Some((3, 5)));
        body.advance(4);
        assert_eq!(body.regular().map(|(_, p, l)| (p, l)), Some((7, 1)));
        // Without a length, the rest of the file; past its end, nothing.
        let body = FileBody::new(open(), Some(6), None);
        assert_eq!(body.regular().map(|(_, p, l)| (p, l)), Some((6, 4)));
        let body = FileBody::new(open(), Some(60), Some(5));
        assert_eq!(body.regular().map(|(_, _, l)| l), Some(0));
        // Not seekable (a pipe): read in turn.
        assert!(FileBody::new(open(), None, None).regular().is_none());
        let _ = std::fs::remove_file(&path);
    }
}
