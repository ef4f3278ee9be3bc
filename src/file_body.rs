//! Reading a file body in pieces on the runtime's blocking pool.
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
}
