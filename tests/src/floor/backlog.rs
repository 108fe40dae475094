//! Frames a QUIC stream could not take yet (its flow-control or congestion window was full),
//! bounded per stream. The quinn and quinn-proto servers hand every frame to the stream through
//! this, so both treat a slow reader the same way: hold up to [`MAX_BACKLOG`] frames, drop
//! beyond (counted, and reported as lost). In the probe's runs it stays empty; it exists so a
//! frame is never half-written and never queued without bound.

use std::collections::VecDeque;

use bytes::Bytes;

/// Frames held per stream at most: 64 frames of 100 bytes, far more than one round trip of
/// pushes at the probe's rates.
pub const MAX_BACKLOG: usize = 64;

/// What one attempt to write a chunk did.
pub enum Wrote {
    /// The chunk was taken, perhaps in part (the chunk is advanced past what was taken).
    Some,
    /// Nothing was taken: the stream is blocked.
    Blocked,
    /// The stream is gone (reset, or its connection closed).
    Gone,
}

#[derive(Default)]
pub struct Backlog {
    frames: VecDeque<Bytes>,
    /// The stream is gone: frames for it are dropped.
    pub gone: bool,
}

impl Backlog {
    /// Queues `frame` behind what is waiting (or drops it when [`MAX_BACKLOG`] are), then
    /// writes as much as the stream takes. Returns the frames dropped.
    pub fn deliver(&mut self, frame: Bytes, write: impl FnMut(&mut Bytes) -> Wrote) -> u64 {
        if self.gone || self.frames.len() >= MAX_BACKLOG {
            return 1;
        }
        self.frames.push_back(frame);
        self.flush(write)
    }

    /// Writes waiting frames, in order, until the stream blocks. Returns the frames dropped
    /// (all that wait, when the stream turns out to be gone).
    pub fn flush(&mut self, mut write: impl FnMut(&mut Bytes) -> Wrote) -> u64 {
        while let Some(front) = self.frames.front_mut() {
            match write(front) {
                Wrote::Some if front.is_empty() => {
                    self.frames.pop_front();
                }
                Wrote::Some | Wrote::Blocked => break,
                Wrote::Gone => {
                    self.gone = true;
                    let n = self.frames.len() as u64;
                    self.frames.clear();
                    return n;
                }
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_a_blocked_stream_refuses_and_drops_beyond_the_bound() {
        let mut b = Backlog::default();
        let frame = Bytes::from_static(&[1; 10]);
        for _ in 0..MAX_BACKLOG {
            assert_eq!(b.deliver(frame.clone(), |_| Wrote::Blocked), 0);
        }
        assert_eq!(b.deliver(frame.clone(), |_| Wrote::Blocked), 1);
        // Half a frame taken: it stays first, advanced.
        b.flush(|c| {
            let _ = c.split_to(5);
            Wrote::Some
        });
        assert_eq!(b.frames.len(), MAX_BACKLOG);
        assert_eq!(b.frames[0].len(), 5);
        let mut taken = 0;
        b.flush(|c| {
            taken += c.len();
            c.clear();
            Wrote::Some
        });
        assert_eq!(taken, 5 + 10 * (MAX_BACKLOG - 1));
        assert_eq!(b.deliver(frame, |_| Wrote::Gone), 1);
        assert!(b.gone);
    }
}
