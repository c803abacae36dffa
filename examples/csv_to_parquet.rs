//! Writes a play CSV as Parquet (for the ingest measurement in results/):
//! `cargo run --release --example csv_to_parquet IN.csv OUT.parquet`.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use settle::tools::ingest::parse::{scan, Format, Play};

const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

fn batch(schema: &Arc<Schema>, rows: &[Play], with_id: bool) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = Vec::new();
    if with_id {
        cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|p| p.id.unwrap_or(0)),
        )));
    }
    cols.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|p| p.user_id),
    )));
    cols.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|p| p.video_id),
    )));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|p| p.started_at + PG_EPOCH_UNIX_MICROS),
        )
        .with_timezone("UTC"),
    ));
    cols.push(Arc::new(Int32Array::from_iter_values(
        rows.iter().map(|p| p.start_position),
    )));
    cols.push(Arc::new(Int32Array::from_iter_values(
        rows.iter().map(|p| p.end_position),
    )));
    RecordBatch::try_new(schema.clone(), cols).expect("a batch")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = (&args[1], &args[2]);
    let mut first = true;
    let mut with_id = false;
    let mut rows: Vec<Play> = Vec::with_capacity(1 << 17);
    let mut writer: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
    let mut schema = Arc::new(Schema::empty());
    scan(input.as_ref(), Format::Csv, None, &mut |row| {
        let Ok(p) = row else { return Ok(()) };
        if first {
            first = false;
            with_id = p.id.is_some();
            let mut f = Vec::new();
            if with_id {
                f.push(Field::new("id", DataType::Int64, false));
            }
            f.push(Field::new("user_id", DataType::Int64, false));
            f.push(Field::new("video_id", DataType::Int64, false));
            f.push(Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ));
            f.push(Field::new("start_position", DataType::Int32, false));
            f.push(Field::new("end_position", DataType::Int32, false));
            schema = Arc::new(Schema::new(f));
            let file = std::fs::File::create(output).expect("output file");
            writer =
                Some(parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap());
        }
        rows.push(p);
        if rows.len() == 1 << 17 {
            let w = writer.as_mut().expect("writer");
            w.write(&batch(&schema, &rows, with_id)).unwrap();
            rows.clear();
        }
        Ok(())
    })
    .expect("the CSV reads");
    let mut w = writer.expect("at least one row");
    if !rows.is_empty() {
        w.write(&batch(&schema, &rows, with_id)).unwrap();
    }
    w.close().unwrap();
}
