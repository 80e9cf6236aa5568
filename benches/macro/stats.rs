//! Percentiles (through an HDR histogram) and medians over rounds.

use hdrhistogram::Histogram;

/// Latency percentiles of one run, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub count: u64,
}

impl Percentiles {
    /// From raw samples in nanoseconds (1 µs to 60 s, 3 significant digits).
    pub fn of(samples: &[u64]) -> Result<Percentiles, String> {
        let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        for &s in samples {
            h.saturating_record(s.clamp(1_000, 60_000_000_000));
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        Ok(Percentiles {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            count: h.len(),
        })
    }

    pub fn get(&self, which: Pct) -> f64 {
        match which {
            Pct::P50 => self.p50,
            Pct::P90 => self.p90,
            Pct::P99 => self.p99,
            Pct::P999 => self.p999,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pct {
    P50,
    P90,
    P99,
    P999,
}

impl Pct {
    pub const ALL: [Pct; 4] = [Pct::P50, Pct::P90, Pct::P99, Pct::P999];

    pub fn label(self) -> &'static str {
        match self {
            Pct::P50 => "p50",
            Pct::P90 => "p90",
            Pct::P99 => "p99",
            Pct::P999 => "p99.9",
        }
    }
}

/// The median of the values (the mean of the middle two for an even count); None when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
