//! Parquet play files through arrow: columns by name, integers of any
//! width, `started_at` as a timestamp (with a zone: an instant; without: a
//! wall-clock time that needs --timezone) or as text.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::parse::{no_zone, Play, Reject, Row, Zone, COLUMNS};
use crate::error::{Error, Result};
use crate::rules::calendar::utc_to_pg_micros;

fn usage(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{}: {what}", path.display()))
}

/// A batch's columns, cast to the types a play needs.
struct Columns {
    ints: [Option<ArrayRef>; 6],
    /// Microseconds since 1970 and whether they are instants (the column
    /// had a zone) or wall-clock times.
    micros: Option<(ArrayRef, bool)>,
    text: Option<ArrayRef>,
}

fn columns(path: &Path, batch: &RecordBatch) -> Result<Columns> {
    let mut ints: [Option<ArrayRef>; 6] = Default::default();
    let mut out = Columns {
        ints: Default::default(),
        micros: None,
        text: None,
    };
    for (k, name) in COLUMNS.iter().enumerate() {
        let Some(col) = batch.column_by_name(name) else {
            if k == 0 {
                continue;
            }
            return Err(usage(path, format!("no column {name:?}")));
        };
        let cast = |to: &DataType| {
            arrow_cast::cast(col, to)
                .map_err(|e| usage(path, format!("column {name:?} ({}): {e}", col.data_type())))
        };
        if k == 3 {
            match col.data_type() {
                DataType::Timestamp(_, tz) => {
                    let to = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
                    out.micros = Some((cast(&to)?, tz.is_some()));
                }
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    out.text = Some(cast(&DataType::Utf8)?)
                }
                other => {
                    return Err(usage(
                        path,
                        format!("started_at is {other}, not a timestamp"),
                    ))
                }
            }
        } else {
            if !col.data_type().is_integer() {
                return Err(usage(
                    path,
                    format!("column {name:?} is {}, not an integer", col.data_type()),
                ));
            }
            ints[k] = Some(cast(&DataType::Int64)?);
        }
    }
    out.ints = ints;
    Ok(out)
}

fn row(path: &Path, c: &Columns, i: usize, line: u64, zone: Option<Zone>) -> Result<Row> {
    let rej = |col: &str, why: String| {
        Ok(Err(Reject {
            line,
            column: col.to_string(),
            reason: why,
        }))
    };
    let mut v = [0i64; 6];
    for k in [0, 1, 2, 4, 5] {
        let Some(a) = &c.ints[k] else { continue };
        if a.is_null(i) {
            return rej(COLUMNS[k], "missing value".into());
        }
        v[k] = a.as_primitive::<Int64Type>().value(i);
        if k >= 4 && i32::try_from(v[k]).is_err() {
            return rej(COLUMNS[k], format!("{} is out of 32-bit range", v[k]));
        }
    }
    let started_at = if let Some((a, instant)) = &c.micros {
        if a.is_null(i) {
            return rej("started_at", "missing value".into());
        }
        let us = a.as_primitive::<TimestampMicrosecondType>().value(i);
        let Some(t) = chrono::DateTime::from_timestamp_micros(us) else {
            return rej("started_at", format!("{us} µs is out of range"));
        };
        if *instant {
            utc_to_pg_micros(t)
        } else {
            let Some(z) = zone else {
                return Err(no_zone(path, line, &t.naive_utc().to_string()));
            };
            match z.instant_of(t.naive_utc()) {
                Some(v) => v,
                None => {
                    return rej(
                        "started_at",
                        format!("{t} does not exist once in --timezone"),
                    )
                }
            }
        }
    } else {
        let a = c.text.as_ref().expect("started_at is a timestamp or text");
        if a.is_null(i) {
            return rej("started_at", "missing value".into());
        }
        match super::parse::timestamp_text(a.as_string::<i32>().value(i), zone) {
            Ok(v) => v,
            Err(Ok(why)) => return rej("started_at", why),
            Err(Err(ts)) => return Err(no_zone(path, line, &ts)),
        }
    };
    Ok(Ok(Play {
        id: c.ints[0].is_some().then_some(v[0]),
        user_id: v[1],
        video_id: v[2],
        started_at,
        start_position: v[4] as i32,
        end_position: v[5] as i32,
    }))
}

pub fn scan(
    path: &Path,
    zone: Option<Zone>,
    each: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| usage(path, format!("not a Parquet file: {e}")))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| usage(path, e))?;
    let mut line = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| usage(path, e))?;
        let cols = Arc::new(columns(path, &batch)?);
        for i in 0..batch.num_rows() {
            line += 1;
            each(row(path, &cols, i, line, zone)?)?;
        }
    }
    Ok(())
}
