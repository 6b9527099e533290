//! A frame-time histogram, to check that the window stays responsive while studies are scored.

use std::fmt;

/// Upper bounds of the buckets, in milliseconds; the last bucket is open.
const BOUNDS_MS: [f64; 8] = [2.0, 4.0, 8.0, 12.0, 16.0, 25.0, 33.0, 50.0];

/// Counts of frame times in buckets, split by whether scoring was running.
#[derive(Clone, Debug, Default)]
pub struct FrameStats {
    while_scoring: Histogram,
    idle: Histogram,
    app_while_scoring: Histogram,
}

/// One histogram of frame times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Frames per bucket: below 2, 4, 8, 12, 16, 25, 33, 50 ms, and 50 ms or more.
    pub counts: [u64; 9],
    /// The slowest frame, in milliseconds.
    pub max_ms: f64,
    /// The sum of all frame times, in milliseconds.
    pub total_ms: f64,
}

impl Histogram {
    /// Adds one frame.
    pub fn record(&mut self, ms: f64) {
        let bucket = BOUNDS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.max_ms = self.max_ms.max(ms);
        self.total_ms += ms;
    }

    /// The number of frames.
    pub fn frames(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The share of frames under 16 ms.
    pub fn share_under_16_ms(&self) -> f64 {
        let n = self.frames();
        if n == 0 {
            return 1.0;
        }
        self.counts[..5].iter().sum::<u64>() as f64 / n as f64
    }
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.frames();
        if n == 0 {
            return f.write_str("no frames");
        }
        write!(
            f,
            "{n} frames, mean {:.1} ms, max {:.1} ms, {:.2}% under 16 ms |",
            self.total_ms / n as f64,
            self.max_ms,
            100.0 * self.share_under_16_ms()
        )?;
        let mut low = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            match BOUNDS_MS.get(i) {
                Some(&high) => write!(f, " {low}-{high} ms: {count}")?,
                None => write!(f, " >={low} ms: {count}")?,
            }
            low = BOUNDS_MS.get(i).copied().unwrap_or(low);
        }
        Ok(())
    }
}

impl FrameStats {
    /// Adds one frame: its whole CPU time (`ms`) and the part spent in the app's own logic and
    /// drawing (`app_ms`).
    pub fn record(&mut self, ms: f64, app_ms: f64, scoring: bool) {
        if scoring {
            self.while_scoring.record(ms);
            self.app_while_scoring.record(app_ms);
        } else {
            self.idle.record(ms);
        }
    }

    /// The app's own logic and drawing (no tessellation or painting) while scoring.
    pub fn app_while_scoring(&self) -> &Histogram {
        &self.app_while_scoring
    }

    /// Frames while studies were being scored.
    pub fn while_scoring(&self) -> &Histogram {
        &self.while_scoring
    }

    /// Frames while nothing was being scored.
    pub fn idle(&self) -> &Histogram {
        &self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_land_in_their_buckets() {
        let mut h = Histogram::default();
        for ms in [0.5, 3.0, 15.9, 16.0, 70.0] {
            h.record(ms);
        }
        assert_eq!(h.counts, [1, 1, 0, 0, 1, 1, 0, 0, 1]);
        assert_eq!(h.frames(), 5);
        assert_eq!(h.max_ms, 70.0);
        assert!((h.share_under_16_ms() - 0.6).abs() < 1e-12);
        assert!(h.to_string().contains(">=50 ms: 1"), "{h}");
    }
}
