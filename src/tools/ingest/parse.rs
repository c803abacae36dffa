//! Reading play files: CSV, TSV, NDJSON and Parquet rows into plays, or
//! into rejects that name the line, the column and the reason. Pure: the
//! same file always gives the same plays and rejects, so the load's second
//! pass skips exactly the lines the first pass counted as rejects.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};
use crate::rules::calendar::{utc_to_pg_micros, PG_EPOCH_UNIX_MICROS};

/// The columns of SPEC §1 a file may hold; `id` is optional.
pub const COLUMNS: [&str; 6] = [
    "id",
    "user_id",
    "video_id",
    "started_at",
    "start_position",
    "end_position",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Tsv,
    Ndjson,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.to_ascii_lowercase().as_str() {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "ndjson" | "jsonl" | "json" => Format::Ndjson,
            "parquet" | "pq" => Format::Parquet,
            _ => return None,
        })
    }

    /// From the file name's extension (before a `.rejects`-style suffix is
    /// never looked at: the last extension decides).
    pub fn from_path(p: &Path) -> Option<Format> {
        p.extension()
            .and_then(|e| e.to_str())
            .and_then(Format::parse)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }
}

/// The zone of timestamps that carry none (`--timezone`).
#[derive(Clone, Copy, Debug)]
pub enum Zone {
    Fixed(chrono::FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `+09:00`, `-0500`, `Z`, `UTC` or an IANA name such as `Asia/Seoul`.
    pub fn parse(s: &str) -> Option<Zone> {
        if let Some(secs) = offset_secs(s) {
            return chrono::FixedOffset::east_opt(secs).map(Zone::Fixed);
        }
        s.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
    }

    /// The instant of a wall-clock time here; `None` when the time falls in
    /// a daylight-saving gap or fold.
    pub(super) fn instant_of(self, t: NaiveDateTime) -> Option<i64> {
        let utc = match self {
            Zone::Fixed(o) => o.from_local_datetime(&t).single()?.to_utc(),
            Zone::Named(z) => z.from_local_datetime(&t).single()?.to_utc(),
        };
        Some(utc_to_pg_micros(utc))
    }
}

/// One play ready for COPY: `started_at` in PostgreSQL microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Play {
    pub id: Option<i64>,
    pub user_id: i64,
    pub video_id: i64,
    pub started_at: i64,
    pub start_position: i32,
    pub end_position: i32,
}

/// An unparseable row: where and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reject {
    /// 1-based line of a text file (the header is line 1), or 1-based row
    /// of a Parquet file.
    pub line: u64,
    pub column: String,
    pub reason: String,
}

fn reject(line: u64, column: &str, reason: impl Into<String>) -> Reject {
    Reject {
        line,
        column: column.to_string(),
        reason: reason.into(),
    }
}

/// What a column's text failed as.
enum Bad {
    Reject(String),
    /// A timestamp without a zone and no `--timezone`: the whole file is
    /// refused rather than guessed.
    NoZone(String),
}

fn offset_secs(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    (h <= 18 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.ffffff][Z|+HH|+HH:MM|+HHMM]`, the shapes COPY
/// and RFC 3339 write. Without a zone, `zone` places it, or it is refused.
fn parse_timestamp(s: &str, zone: Option<Zone>) -> Result<i64, Bad> {
    let s = s.trim();
    let b = s.as_bytes();
    let bad = || Bad::Reject(format!("not a timestamp: {s:?}"));
    if b.len() < 19 || !(b[10] == b' ' || b[10] == b'T') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &b[r];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |a, d| a * 10 + (d - b'0') as u32))
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(bad());
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let mut at = 19;
    let mut micros = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        let frac = &b[start..at];
        if frac.is_empty() || frac.len() > 6 {
            return Err(Bad::Reject(format!(
                "not a timestamp (at most microseconds): {s:?}"
            )));
        }
        micros = frac.iter().fold(0u32, |a, d| a * 10 + (d - b'0') as u32)
            * 10u32.pow(6 - frac.len() as u32);
    }
    let naive = NaiveDate::from_ymd_opt(y as i32, mo, d)
        .and_then(|date| date.and_hms_micro_opt(h, mi, sec, micros))
        .ok_or_else(|| Bad::Reject(format!("no such date or time: {s:?}")))?;
    let rest = s[at..].trim();
    if rest.is_empty() {
        let Some(zone) = zone else {
            return Err(Bad::NoZone(s.to_string()));
        };
        return zone
            .instant_of(naive)
            .ok_or_else(|| Bad::Reject(format!("{s:?} does not exist once in --timezone")));
    }
    let off = offset_secs(rest).ok_or_else(|| Bad::Reject(format!("bad zone in {s:?}")))?;
    Ok(naive.and_utc().timestamp_micros() - PG_EPOCH_UNIX_MICROS - off as i64 * 1_000_000)
}

/// [`parse_timestamp`] for other readers: `Err(Ok(reason))` rejects the
/// row, `Err(Err(text))` is a zone-less timestamp without --timezone.
pub(super) fn timestamp_text(
    s: &str,
    zone: Option<Zone>,
) -> std::result::Result<i64, std::result::Result<String, String>> {
    parse_timestamp(s, zone).map_err(|b| match b {
        Bad::Reject(why) => Ok(why),
        Bad::NoZone(ts) => Err(ts),
    })
}

fn parse_i64(s: &str) -> Result<i64, Bad> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| Bad::Reject(format!("not an integer: {s:?}")))
}

fn parse_i32(s: &str) -> Result<i32, Bad> {
    s.trim()
        .parse::<i32>()
        .map_err(|_| Bad::Reject(format!("not a 32-bit integer: {s:?}")))
}

/// What a scan hands its caller per row.
pub type Row = std::result::Result<Play, Reject>;

/// Reads every row of `path` in order and hands each (line, play or reject)
/// to `each`. Errors that condemn the whole file (unreadable, a header
/// without the needed columns, a zone-less timestamp without --timezone)
/// end the scan.
pub fn scan(
    path: &Path,
    format: Format,
    zone: Option<Zone>,
    each: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    match format {
        Format::Csv => scan_delimited(path, b',', true, zone, each),
        Format::Tsv => scan_delimited(path, b'\t', false, zone, each),
        Format::Ndjson => scan_ndjson(path, zone, each),
        Format::Parquet => super::parquet::scan(path, zone, each),
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

pub(super) fn no_zone(path: &Path, line: u64, ts: &str) -> Error {
    Error::Usage(format!(
        "{}: line {line}: timestamp {ts:?} has no zone; give --timezone (e.g. --timezone Asia/Seoul) to say where it was written",
        path.display()
    ))
}

/// Column positions of the header; `id` may be absent.
fn header_positions(path: &Path, names: &[String]) -> Result<[Option<usize>; 6]> {
    let mut pos = [None; 6];
    for (k, c) in COLUMNS.iter().enumerate() {
        pos[k] = names.iter().position(|n| n.trim() == *c);
        if pos[k].is_none() && k > 0 {
            return Err(Error::Usage(format!(
                "{}: the header has no column {c:?} (it needs {} and may have id)",
                path.display(),
                COLUMNS[1..].join(", ")
            )));
        }
    }
    Ok(pos)
}

/// Builds a play from the six fields' text (`None` = the row lacks it).
fn play_from(
    path: &Path,
    line: u64,
    fields: [Option<&str>; 6],
    has_id: bool,
    zone: Option<Zone>,
) -> Result<Row> {
    let mut ints = [0i64; 3];
    let mut pos = [0i32; 2];
    let mut at = 0i64;
    let mut id = None;
    for (k, f) in fields.iter().enumerate() {
        if k == 0 && !has_id {
            continue;
        }
        let col = COLUMNS[k];
        let Some(text) = f else {
            return Ok(Err(reject(line, col, "missing column")));
        };
        if text.trim().is_empty() {
            return Ok(Err(reject(line, col, "empty value")));
        }
        let r = match k {
            0 => parse_i64(text).map(|v| id = Some(v)),
            1 | 2 => parse_i64(text).map(|v| ints[k] = v),
            3 => parse_timestamp(text, zone).map(|v| at = v),
            _ => parse_i32(text).map(|v| pos[k - 4] = v),
        };
        match r {
            Ok(()) => {}
            Err(Bad::Reject(why)) => return Ok(Err(reject(line, col, why))),
            Err(Bad::NoZone(ts)) => return Err(no_zone(path, line, &ts)),
        }
    }
    Ok(Ok(Play {
        id,
        user_id: ints[1],
        video_id: ints[2],
        started_at: at,
        start_position: pos[0],
        end_position: pos[1],
    }))
}

fn scan_delimited(
    path: &Path,
    delimiter: u8,
    quoting: bool,
    zone: Option<Zone>,
    each: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(quoting)
        .flexible(true)
        .has_headers(true)
        .buffer_capacity(1 << 20)
        .from_reader(open(path)?);
    let csv_err = |e: csv::Error| Error::Usage(format!("{}: {e}", path.display()));
    let names: Vec<String> = rdr
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_string)
        .collect();
    let pos = header_positions(path, &names)?;
    let has_id = pos[0].is_some();
    let mut rec = csv::StringRecord::new();
    loop {
        let line_hint = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = rec.position().map_or(line_hint, |p| p.line());
                let fields = pos.map(|p| p.and_then(|i| rec.get(i)));
                each(play_from(path, line, fields, has_id, zone)?)?;
            }
            // Bad UTF-8 (or a broken quote) spoils one record, not the file.
            Err(e) => match e.kind() {
                csv::ErrorKind::Utf8 { pos: Some(p), .. } => {
                    each(Err(reject(p.line(), "", "not UTF-8 text")))?
                }
                _ => return Err(csv_err(e)),
            },
        }
    }
}

/// One NDJSON object, fields kept as raw JSON so that each can be judged
/// (and named in a reject) by itself.
#[derive(serde::Deserialize)]
struct Object<'a> {
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    video_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    started_at: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    start_position: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    end_position: Option<&'a serde_json::value::RawValue>,
}

fn scan_ndjson(
    path: &Path,
    zone: Option<Zone>,
    each: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    let mut rdr = BufReader::with_capacity(1 << 20, open(path)?);
    let mut buf = Vec::new();
    let mut line = 0u64;
    // Whether the file carries ids is decided by its first object.
    let mut has_id = None;
    loop {
        buf.clear();
        let n = rdr
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj: Object = match serde_json::from_slice(&buf) {
            Ok(o) => o,
            Err(e) => {
                each(Err(reject(line, "", format!("not a JSON object: {e}"))))?;
                continue;
            }
        };
        let has = *has_id.get_or_insert(obj.id.is_some_and(|v| v.get() != "null"));
        let raw = [
            obj.id,
            obj.user_id,
            obj.video_id,
            obj.started_at,
            obj.start_position,
            obj.end_position,
        ];
        let mut text: [Option<String>; 6] = Default::default();
        for (k, r) in raw.iter().enumerate() {
            text[k] = match r.map(|v| v.get()) {
                None | Some("null") => None,
                Some(v) if k == 3 => Some(serde_json::from_str::<String>(v).unwrap_or_default()),
                Some(v) => Some(v.to_string()),
            };
        }
        let fields = [0, 1, 2, 3, 4, 5].map(|k| text[k].as_deref());
        each(play_from(path, line, fields, has, zone)?)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_the_shapes_copy_and_rfc3339_write() {
        let utc = |s: &str| parse_timestamp(s, None).ok();
        let base = utc("2024-07-01 00:00:00+00").unwrap();
        assert_eq!(utc("2024-07-01T09:00:00+09:00"), Some(base));
        assert_eq!(utc("2024-07-01 09:00:00+0900"), Some(base));
        assert_eq!(utc("2024-07-01T00:00:00Z"), Some(base));
        assert_eq!(utc("2024-07-01 00:00:00.5+00"), Some(base + 500_000));
        assert!(matches!(
            parse_timestamp("2024-07-01 00:00:00", None),
            Err(Bad::NoZone(_))
        ));
        let seoul = Zone::parse("Asia/Seoul");
        assert_eq!(
            parse_timestamp("2024-07-01 09:00:00", seoul).ok(),
            Some(base)
        );
        assert!(matches!(
            parse_timestamp("2024-02-30 00:00:00Z", None),
            Err(Bad::Reject(_))
        ));
        assert!(matches!(
            parse_timestamp("yesterday", None),
            Err(Bad::Reject(_))
        ));
    }
}
