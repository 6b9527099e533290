//! What a radiologist reads in a study's header besides the film: the patient's age and sex, the
//! study date, the view position (from DICOM attributes), and how long the study has waited.

use std::time::{Duration, SystemTime};

use chrono::{Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

use crate::io::DicomTags;

/// Where a study's waiting time is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitingSince {
    /// The DICOM Study Date and Study Time (local time, as DICOM writes it).
    StudyDateTime,
    /// The DICOM Study Date alone (from its midnight).
    StudyDate,
    /// The file's last modification (a JPEG or PNG, or a DICOM file without a study date): the
    /// time the film reached the folder.
    FileModified,
}

impl WaitingSince {
    /// In words, for a tooltip.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StudyDateTime => "since the study date and time (DICOM)",
            Self::StudyDate => "since the start of the study date (DICOM, no study time)",
            Self::FileModified => "since the file was written to the folder",
        }
    }
}

/// A study's age, sex, date, view and the moment its wait began. Holds patient data: never log
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StudyFacts {
    /// Patient's Age (0010,1010) as written: `045Y`, `006M`, `003W`, `010D`.
    pub age: Option<String>,
    /// Patient's Sex (0010,0040): `F`, `M` or `O`.
    pub sex: Option<String>,
    /// Study Date (0008,0020), `YYYYMMDD`.
    pub study_date: Option<String>,
    /// View Position (0018,5101): `PA`, `AP`, `LL`…
    pub view: Option<String>,
    /// When the study began waiting for a read, and what that is counted from.
    pub waiting_since: Option<(SystemTime, WaitingSince)>,
}

impl StudyFacts {
    /// The facts of a study from its DICOM attributes (if any) and its file's modification time.
    pub fn new(dicom: Option<&DicomTags>, file_modified: Option<SystemTime>) -> Self {
        let since_study = dicom.and_then(|d| {
            dicom_local_time(d.study_date.as_deref()?, d.study_time.as_deref()).map(
                |(t, with_time)| {
                    let from = if with_time {
                        WaitingSince::StudyDateTime
                    } else {
                        WaitingSince::StudyDate
                    };
                    (t, from)
                },
            )
        });
        Self {
            age: dicom.and_then(|d| d.patient_age.clone()),
            sex: dicom.and_then(|d| d.patient_sex.clone()),
            study_date: dicom.and_then(|d| d.study_date.clone()),
            view: dicom.and_then(|d| d.view_position.clone()),
            waiting_since: since_study
                .or_else(|| file_modified.map(|t| (t, WaitingSince::FileModified))),
        }
    }

    /// The age for display: "45 y", "6 mo", "3 wk", "10 d", or the value as written when it does
    /// not follow DICOM's `nnnX` form.
    pub fn age_text(&self) -> Option<String> {
        let raw = self.age.as_deref()?;
        Some(match parse_age(raw) {
            Some((n, unit)) => format!("{n} {}", unit.short()),
            None => raw.to_owned(),
        })
    }

    /// The age in days, for sorting (a year is 365.25 days, a month 30.44).
    pub fn age_days(&self) -> Option<f64> {
        let (n, unit) = parse_age(self.age.as_deref()?)?;
        Some(f64::from(n) * unit.days())
    }

    /// The sex for display: F, M, O (other), or as written.
    pub fn sex_text(&self) -> Option<&str> {
        self.sex.as_deref()
    }

    /// Age and sex for a worklist column: "45 y F", "6 mo", "M".
    pub fn age_sex_text(&self) -> Option<String> {
        match (self.age_text(), self.sex_text()) {
            (Some(a), Some(s)) => Some(format!("{a} {s}")),
            (Some(a), None) => Some(a),
            (None, Some(s)) => Some(s.to_owned()),
            (None, None) => None,
        }
    }

    /// The study date for display, `2024-01-31`, or as written when it is not `YYYYMMDD`.
    pub fn date_text(&self) -> Option<String> {
        let raw = self.study_date.as_deref()?;
        Some(match NaiveDate::parse_from_str(raw, "%Y%m%d") {
            Ok(d) => d.format("%Y-%m-%d").to_string(),
            Err(_) => raw.to_owned(),
        })
    }

    /// How long the study has waited at `now`, if its start is known and not in the future.
    pub fn waited(&self, now: SystemTime) -> Option<Duration> {
        now.duration_since(self.waiting_since?.0).ok()
    }

    /// The header's line: "45 y · F · 2024-01-31 · PA", leaving out what is unknown; `None` when
    /// nothing is.
    pub fn summary(&self) -> Option<String> {
        let parts: Vec<String> = [
            self.age_text(),
            self.sex_text().map(str::to_owned),
            self.date_text(),
            self.view.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(" · "))
    }
}

/// A unit of DICOM's Age String.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgeUnit {
    Days,
    Weeks,
    Months,
    Years,
}

impl AgeUnit {
    fn short(self) -> &'static str {
        match self {
            Self::Days => "d",
            Self::Weeks => "wk",
            Self::Months => "mo",
            Self::Years => "y",
        }
    }

    fn days(self) -> f64 {
        match self {
            Self::Days => 1.0,
            Self::Weeks => 7.0,
            Self::Months => 30.44,
            Self::Years => 365.25,
        }
    }
}

/// DICOM's Age String (`nnnD`, `nnnW`, `nnnM`, `nnnY`), leniently: leading zeros and spaces may
/// be missing.
fn parse_age(raw: &str) -> Option<(u32, AgeUnit)> {
    let raw = raw.trim();
    let unit = match raw.chars().last()?.to_ascii_uppercase() {
        'D' => AgeUnit::Days,
        'W' => AgeUnit::Weeks,
        'M' => AgeUnit::Months,
        'Y' => AgeUnit::Years,
        _ => return None,
    };
    let n = raw[..raw.len() - 1].trim().parse().ok()?;
    Some((n, unit))
}

/// A DICOM date (`YYYYMMDD`) and optional time (`HHMMSS.FFFFFF`, any tail may be missing) as a
/// moment, read as local time; the flag says whether the time was used.
fn dicom_local_time(date: &str, time: Option<&str>) -> Option<(SystemTime, bool)> {
    let date = NaiveDate::parse_from_str(date.trim(), "%Y%m%d").ok()?;
    let parsed_time = time.and_then(dicom_time);
    let at = NaiveDateTime::new(date, parsed_time.unwrap_or(NaiveTime::MIN));
    let local = Local.from_local_datetime(&at).earliest()?;
    Some((SystemTime::from(local), parsed_time.is_some()))
}

/// `HH`, `HHMM`, `HHMMSS` or `HHMMSS.F…`.
fn dicom_time(raw: &str) -> Option<NaiveTime> {
    let raw = raw.trim();
    let whole = raw.split('.').next()?;
    if whole.len() < 2 || whole.len() % 2 != 0 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| whole.get(i..i + 2).and_then(|s| s.parse::<u32>().ok());
    NaiveTime::from_hms_opt(field(0)?, field(2).unwrap_or(0), field(4).unwrap_or(0))
}

/// A waiting time, short enough for a column: "12 min", "3:05 h", "4 d 2 h", "31 d".
pub fn waiting_text(waited: Duration) -> String {
    let mins = waited.as_secs() / 60;
    let days = mins / (24 * 60);
    if mins < 60 {
        format!("{mins} min")
    } else if days < 1 {
        format!("{}:{:02} h", mins / 60, mins % 60)
    } else if days < 10 {
        format!("{days} d {} h", (mins / 60) % 24)
    } else {
        format!("{days} d")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tags(age: &str, sex: &str, date: &str, time: Option<&str>, view: &str) -> DicomTags {
        DicomTags {
            patient_age: Some(age.to_owned()),
            patient_sex: Some(sex.to_owned()),
            study_date: Some(date.to_owned()),
            study_time: time.map(str::to_owned),
            view_position: Some(view.to_owned()),
            ..DicomTags::default()
        }
    }

    #[test]
    fn ages_read_in_their_own_unit_and_sort_in_days() {
        let facts = |age: &str| StudyFacts {
            age: Some(age.to_owned()),
            ..StudyFacts::default()
        };
        assert_eq!(facts("045Y").age_text().as_deref(), Some("45 y"));
        assert_eq!(facts("006M").age_text().as_deref(), Some("6 mo"));
        assert_eq!(facts("003W").age_text().as_deref(), Some("3 wk"));
        assert_eq!(facts("10d").age_text().as_deref(), Some("10 d"));
        assert_eq!(facts("unknown").age_text().as_deref(), Some("unknown"));
        assert_eq!(facts("unknown").age_days(), None);
        let order: Vec<f64> = ["010D", "003W", "006M", "002Y", "045Y"]
            .iter()
            .map(|a| facts(a).age_days().unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    #[test]
    fn the_header_line_leaves_out_what_is_unknown() {
        let f = StudyFacts::new(Some(&tags("045Y", "F", "20240131", None, "PA")), None);
        assert_eq!(f.summary().as_deref(), Some("45 y · F · 2024-01-31 · PA"));
        let partial = StudyFacts {
            sex: Some("M".into()),
            view: Some("AP".into()),
            ..StudyFacts::default()
        };
        assert_eq!(partial.summary().as_deref(), Some("M · AP"));
        assert_eq!(StudyFacts::new(None, None).summary(), None);
        assert_eq!(f.age_sex_text().as_deref(), Some("45 y F"));
        assert_eq!(partial.age_sex_text().as_deref(), Some("M"));
    }

    #[test]
    fn waiting_counts_from_the_study_time_else_the_date_else_the_file() {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with_time = StudyFacts::new(
            Some(&tags("045Y", "F", "20240131", Some("143000.25"), "PA")),
            Some(modified),
        );
        let date_only = StudyFacts::new(
            Some(&tags("045Y", "F", "20240131", None, "PA")),
            Some(modified),
        );
        let (t1, from1) = with_time.waiting_since.unwrap();
        let (t0, from0) = date_only.waiting_since.unwrap();
        assert_eq!(from1, WaitingSince::StudyDateTime);
        assert_eq!(from0, WaitingSince::StudyDate);
        // 14:30:00 after midnight of the same day (a DST change cannot fall in January's day in
        // any zone this runs in, and the 0.25 s are dropped).
        assert_eq!(t1.duration_since(t0).unwrap(), Duration::from_secs(52_200));
        let jpeg = StudyFacts::new(None, Some(modified));
        assert_eq!(
            jpeg.waiting_since,
            Some((modified, WaitingSince::FileModified))
        );
        let later = modified + Duration::from_secs(3 * 3600 + 5 * 60);
        assert_eq!(jpeg.waited(later), Some(Duration::from_secs(11_100)));
        // A start in the future (a wrong clock) shows no waiting time rather than a negative one.
        assert_eq!(jpeg.waited(modified - Duration::from_secs(1)), None);
        // A damaged date falls back to the file.
        let bad = StudyFacts::new(
            Some(&tags("045Y", "F", "2024-13-45", Some("1430"), "PA")),
            Some(modified),
        );
        assert_eq!(bad.waiting_since.unwrap().1, WaitingSince::FileModified);
    }

    #[test]
    fn dicom_times_may_omit_minutes_seconds_and_fractions() {
        assert_eq!(dicom_time("14"), NaiveTime::from_hms_opt(14, 0, 0));
        assert_eq!(dicom_time("1430"), NaiveTime::from_hms_opt(14, 30, 0));
        assert_eq!(dicom_time("143015.5"), NaiveTime::from_hms_opt(14, 30, 15));
        assert_eq!(dicom_time("143"), None);
        assert_eq!(dicom_time("2560"), None);
    }

    #[test]
    fn waiting_times_read_at_a_glance() {
        assert_eq!(waiting_text(Duration::from_secs(59)), "0 min");
        assert_eq!(waiting_text(Duration::from_secs(12 * 60)), "12 min");
        assert_eq!(waiting_text(Duration::from_secs(3 * 3600 + 300)), "3:05 h");
        assert_eq!(waiting_text(Duration::from_secs(98 * 3600)), "4 d 2 h");
        assert_eq!(
            waiting_text(Duration::from_secs(31 * 86_400 + 7200)),
            "31 d"
        );
    }
}
