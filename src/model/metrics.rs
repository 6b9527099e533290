//! Classification metrics: ROC AUC (with a bootstrap interval), confusion matrix, calibration.
//!
//! Labels are `true` for pneumonia (the positive class); scores are probabilities in `[0, 1]`.

use rand::{RngExt as _, SeedableRng as _};

/// Counts at one threshold (a score `>= threshold` is called positive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    /// Pneumonia called pneumonia.
    pub tp: usize,
    /// Normal called pneumonia.
    pub fp: usize,
    /// Normal called normal.
    pub tn: usize,
    /// Pneumonia called normal.
    pub fn_: usize,
}

impl Confusion {
    /// Counts the calls of `scores` at `threshold` against `labels`.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let mut c = Self::default();
        for (&s, &y) in scores.iter().zip(labels) {
            match (s >= threshold, y) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    fn ratio(num: usize, den: usize) -> f64 {
        if den == 0 {
            f64::NAN
        } else {
            num as f64 / den as f64
        }
    }

    /// Fraction of correct calls.
    pub fn accuracy(&self) -> f64 {
        Self::ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }

    /// Recall of pneumonia: TP / (TP + FN).
    pub fn sensitivity(&self) -> f64 {
        Self::ratio(self.tp, self.tp + self.fn_)
    }

    /// Recall of normal: TN / (TN + FP).
    pub fn specificity(&self) -> f64 {
        Self::ratio(self.tn, self.tn + self.fp)
    }

    /// Positive predictive value: TP / (TP + FP).
    pub fn ppv(&self) -> f64 {
        Self::ratio(self.tp, self.tp + self.fp)
    }

    /// Negative predictive value: TN / (TN + FN).
    pub fn npv(&self) -> f64 {
        Self::ratio(self.tn, self.tn + self.fn_)
    }

    /// Sensitivity with its 95% Wilson score interval.
    pub fn sensitivity_interval(&self) -> Interval {
        wilson_interval(self.tp, self.tp + self.fn_)
    }

    /// Specificity with its 95% Wilson score interval.
    pub fn specificity_interval(&self) -> Interval {
        wilson_interval(self.tn, self.tn + self.fp)
    }
}

/// A proportion `successes / trials` with its 95% Wilson score interval (which, unlike the
/// normal approximation, stays inside 0..1 and behaves near 0 and 1). NaN without trials.
pub fn wilson_interval(successes: usize, trials: usize) -> Interval {
    if trials == 0 {
        return Interval {
            estimate: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        estimate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann-Whitney U statistic). NaN without both classes.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|&&y| y).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// A point of the ROC curve.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RocPoint {
    /// Scores at or above this are called positive.
    pub threshold: f32,
    /// 1 - specificity.
    pub false_positive_rate: f64,
    /// Sensitivity.
    pub true_positive_rate: f64,
}

/// The ROC curve, from (0, 0) to (1, 1), one point per distinct score.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Vec<RocPoint> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let n_pos = labels.iter().filter(|&&y| y).count().max(1) as f64;
    let n_neg = (labels.len() - labels.iter().filter(|&&y| y).count()).max(1) as f64;
    let mut points = vec![RocPoint {
        threshold: f32::INFINITY,
        false_positive_rate: 0.0,
        true_positive_rate: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let t = scores[order[i]];
        while i < order.len() && scores[order[i]] == t {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: t,
            false_positive_rate: fp as f64 / n_neg,
            true_positive_rate: tp as f64 / n_pos,
        });
    }
    points
}

/// The highest threshold whose sensitivity is at least `min_sensitivity`: the triage operating
/// point. Returns the threshold, placed halfway below the last positive it must catch.
pub fn threshold_for_sensitivity(scores: &[f32], labels: &[bool], min_sensitivity: f64) -> f32 {
    let mut pos: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|&(_, &y)| y)
        .map(|(&s, _)| s)
        .collect();
    if pos.is_empty() {
        return 0.5;
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    let need = ((min_sensitivity * pos.len() as f64).ceil() as usize).clamp(1, pos.len());
    let t = pos[need - 1];
    // Halfway to the next lower score overall, so that ties and rounding keep that positive.
    let next_lower = scores
        .iter()
        .copied()
        .filter(|&s| s < t)
        .fold(f32::NEG_INFINITY, f32::max);
    if next_lower.is_finite() {
        (t + next_lower) / 2.0
    } else {
        t
    }
}

/// A two-sided percentile bootstrap interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// The statistic on the full sample.
    #[serde(deserialize_with = "nan_from_null")]
    pub estimate: f64,
    /// Lower bound.
    #[serde(deserialize_with = "nan_from_null")]
    pub low: f64,
    /// Upper bound.
    #[serde(deserialize_with = "nan_from_null")]
    pub high: f64,
}

/// Reads a number, or `null` as NaN: `serde_json` writes a NaN (a rate with no cases, such as
/// the PPV when nothing is called positive) as `null`, and this reads it back.
pub fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// 95% percentile bootstrap interval of the ROC AUC, resampling cases with replacement,
/// stratified by class so that every resample has both. Seeded: the same inputs give the same
/// interval.
pub fn roc_auc_bootstrap(scores: &[f32], labels: &[bool], resamples: usize, seed: u64) -> Interval {
    let estimate = roc_auc(scores, labels);
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    if pos.is_empty() || neg.is_empty() || resamples == 0 {
        return Interval {
            estimate,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut aucs = Vec::with_capacity(resamples);
    let mut s = Vec::with_capacity(labels.len());
    let mut y = Vec::with_capacity(labels.len());
    for _ in 0..resamples {
        s.clear();
        y.clear();
        for group in [&pos, &neg] {
            for _ in 0..group.len() {
                let k = group[rng.random_range(0..group.len())];
                s.push(scores[k]);
                y.push(labels[k]);
            }
        }
        aucs.push(roc_auc(&s, &y));
    }
    aucs.sort_by(f64::total_cmp);
    let at = |q: f64| aucs[((q * (aucs.len() - 1) as f64).round() as usize).min(aucs.len() - 1)];
    Interval {
        estimate,
        low: at(0.025),
        high: at(0.975),
    }
}

/// One bin of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin's score range.
    pub low: f32,
    /// Upper edge.
    pub high: f32,
    /// Cases in the bin.
    pub count: usize,
    /// Their mean score.
    pub mean_score: f64,
    /// Their fraction of pneumonia.
    pub fraction_positive: f64,
}

/// Equal-width calibration bins over `[0, 1]` and the expected calibration error (ECE): the
/// count-weighted mean of |fraction positive − mean score|.
pub fn calibration(scores: &[f32], labels: &[bool], bins: usize) -> (Vec<CalibrationBin>, f64) {
    let bins = bins.max(1);
    let mut sum_s = vec![0.0f64; bins];
    let mut sum_y = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for (&s, &y) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        sum_s[b] += f64::from(s);
        sum_y[b] += f64::from(u8::from(y));
        count[b] += 1;
    }
    let n = scores.len().max(1) as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|b| {
            let c = count[b].max(1) as f64;
            let (ms, fp) = (sum_s[b] / c, sum_y[b] / c);
            ece += count[b] as f64 / n * (fp - ms).abs();
            CalibrationBin {
                low: b as f32 / bins as f32,
                high: (b + 1) as f32 / bins as f32,
                count: count[b],
                mean_score: ms,
                fraction_positive: fp,
            }
        })
        .collect();
    (out, ece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_computed_cases() {
        // 8 of 10: the textbook interval is 0.4902 to 0.9433.
        let i = wilson_interval(8, 10);
        assert!((i.estimate - 0.8).abs() < 1e-12);
        assert!((i.low - 0.4902).abs() < 1e-4, "{}", i.low);
        assert!((i.high - 0.9433).abs() < 1e-4, "{}", i.high);
        // All successes: the upper bound is 1 and the lower bound n / (n + z^2).
        let all = wilson_interval(20, 20);
        assert_eq!(all.high, 1.0);
        assert!((all.low - 20.0 / (20.0 + 1.959_964f64.powi(2))).abs() < 1e-5);
        assert!(wilson_interval(0, 0).low.is_nan());
    }

    #[test]
    fn auc_matches_hand_computed_cases() {
        // Perfect separation.
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            1.0
        );
        // Perfectly wrong.
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            0.0
        );
        // Pairs (pos, neg): positives 0.8, 0.4; negatives 0.6, 0.2.
        // 0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2: 3 of 4 pairs.
        assert_eq!(
            roc_auc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]),
            0.75
        );
        // A tie between a positive and a negative counts one half: pairs (0.5,0.5)=0.5, (0.5,0.1)=1,
        // (0.9,0.5)=1, (0.9,0.1)=1 -> 3.5 / 4.
        assert_eq!(
            roc_auc(&[0.5, 0.9, 0.5, 0.1], &[true, true, false, false]),
            0.875
        );
        // One class only: undefined.
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
    }

    #[test]
    fn roc_curve_ends_at_corners_and_its_area_is_the_auc() {
        let s = [0.8, 0.4, 0.6, 0.2, 0.5, 0.5];
        let y = [true, true, false, false, true, false];
        let pts = roc_curve(&s, &y);
        assert_eq!(pts.first().unwrap().true_positive_rate, 0.0);
        let last = pts.last().unwrap();
        assert_eq!(
            (last.false_positive_rate, last.true_positive_rate),
            (1.0, 1.0)
        );
        let trapezoid: f64 = pts
            .windows(2)
            .map(|w| {
                (w[1].false_positive_rate - w[0].false_positive_rate)
                    * (w[1].true_positive_rate + w[0].true_positive_rate)
                    / 2.0
            })
            .sum();
        assert!((trapezoid - roc_auc(&s, &y)).abs() < 1e-12);
    }

    #[test]
    fn confusion_and_rates() {
        let s = [0.9, 0.7, 0.3, 0.6, 0.1];
        let y = [true, true, true, false, false];
        let c = Confusion::at(&s, &y, 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert!((c.sensitivity() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.specificity() - 0.5).abs() < 1e-12);
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        assert!((c.ppv() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.npv() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn threshold_reaches_the_asked_sensitivity() {
        let s = [0.95, 0.9, 0.8, 0.3, 0.7, 0.2, 0.1];
        let y = [true, true, true, true, false, false, false];
        // 75% sensitivity needs 3 of 4 positives: the third highest positive is 0.8, the next
        // lower score overall is 0.7, so the threshold sits at 0.75.
        let t = threshold_for_sensitivity(&s, &y, 0.75);
        assert!((t - 0.75).abs() < 1e-6);
        assert!(Confusion::at(&s, &y, t).sensitivity() >= 0.75);
        // All positives: down to 0.3, halfway to 0.2.
        let t = threshold_for_sensitivity(&s, &y, 1.0);
        assert!((t - 0.25).abs() < 1e-6);
        assert_eq!(Confusion::at(&s, &y, t).sensitivity(), 1.0);
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_is_seeded() {
        let s: Vec<f32> = (0..200).map(|i| ((i * 37) % 100) as f32 / 100.0).collect();
        let y: Vec<bool> = (0..200)
            .map(|i| (i * 37) % 100 > 40 || i % 7 == 0)
            .collect();
        let a = roc_auc_bootstrap(&s, &y, 500, 7);
        let b = roc_auc_bootstrap(&s, &y, 500, 7);
        assert_eq!(a, b);
        assert!(a.low <= a.estimate && a.estimate <= a.high);
        assert!(a.high - a.low > 0.0 && a.high - a.low < 0.2);
    }

    #[test]
    fn calibration_error_of_a_calibrated_and_a_miscalibrated_model() {
        // Scores 0.25 with 1 of 4 positive, and 0.75 with 3 of 4 positive: perfectly calibrated.
        let s = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let y = [true, false, false, false, true, true, true, false];
        let (_, ece) = calibration(&s, &y, 10);
        assert!(ece.abs() < 1e-9);
        // Always 0.9, half positive: ECE = 0.4.
        let (bins, ece) = calibration(&[0.9; 4], &[true, false, true, false], 10);
        assert!((ece - 0.4).abs() < 1e-6);
        assert_eq!(bins[9].count, 4);
    }
}
