//! Seoul calendar arithmetic. Asia/Seoul is UTC+9 with no daylight saving,
//! so a fixed offset is exact (and far cheaper per row than a tz database).

use chrono::{Datelike, Duration, NaiveDate};

pub const SEOUL_OFFSET_MICROS: i64 = 9 * 3_600 * 1_000_000;
pub const DAY_MICROS: i64 = 86_400 * 1_000_000;
/// Days from 1970-01-01 to 2000-01-01, the epoch of PostgreSQL timestamps.
pub const PG_EPOCH_DAYS: i32 = 10_957;

/// A Seoul calendar day as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

/// The Seoul day of a PostgreSQL timestamp (microseconds since 2000-01-01 UTC).
#[inline]
pub fn seoul_day_pg(pg_micros: i64) -> Day {
    Day((pg_micros + SEOUL_OFFSET_MICROS).div_euclid(DAY_MICROS) as i32 + PG_EPOCH_DAYS)
}

impl Day {
    pub fn from_date(d: NaiveDate) -> Day {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch");
        Day((d - epoch).num_days() as i32)
    }

    pub fn date(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch") + Duration::days(self.0 as i64)
    }

    /// Start of this Seoul day as a PostgreSQL timestamp (µs since 2000 UTC).
    pub fn start_pg_micros(self) -> i64 {
        (self.0 - PG_EPOCH_DAYS) as i64 * DAY_MICROS - SEOUL_OFFSET_MICROS
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    /// The Monday starting this day's week.
    pub fn week_start(self) -> Day {
        // 1970-01-01 was a Thursday: weekday index with Monday = 0 is (d + 3) mod 7.
        Day(self.0 - (self.0 + 3).rem_euclid(7))
    }

    pub fn month_start(self) -> Day {
        let d = self.date();
        Day::from_date(NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("valid month"))
    }

    pub fn period_start(self, kind: PeriodKind) -> Day {
        match kind {
            PeriodKind::Day => self,
            PeriodKind::Week => self.week_start(),
            PeriodKind::Month => self.month_start(),
        }
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.date())
    }
}

/// Days travel as ISO dates (in JSON summaries, events and the API).
impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Day,
    Week,
    Month,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 3] = [PeriodKind::Day, PeriodKind::Week, PeriodKind::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Week => "week",
            PeriodKind::Month => "month",
        }
    }

    /// The kind named by `period_kind` in the result tables.
    pub fn parse(s: &str) -> Option<PeriodKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A settlement period: its kind and first day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Period {
    pub kind: PeriodKind,
    pub start: Day,
}

impl Period {
    /// The period of the one day `d`.
    pub fn day(d: Day) -> Period {
        Period {
            kind: PeriodKind::Day,
            start: d,
        }
    }

    /// The last day of the period (inclusive).
    pub fn last_day(self) -> Day {
        match self.kind {
            PeriodKind::Day => self.start,
            PeriodKind::Week => Day(self.start.0 + 6),
            PeriodKind::Month => {
                let d = self.start.date();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                Day(Day::from_date(NaiveDate::from_ymd_opt(y, m, 1).expect("valid month")).0 - 1)
            }
        }
    }
}

/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_UNIX_MICROS: i64 = PG_EPOCH_DAYS as i64 * DAY_MICROS;

pub fn pg_micros_to_utc(pg_micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(pg_micros.saturating_add(PG_EPOCH_UNIX_MICROS))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

pub fn utc_to_pg_micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros() - PG_EPOCH_UNIX_MICROS
}
