//! Writing an export: CSV (RFC 4180 through the csv crate) or Parquet
//! (arrow), the manifest, SHA256SUMS and `_SUCCESS`, into a temporary
//! directory renamed into place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Date32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::export::{
    ExecutionRange, ExportRequest, FileEntry, Format, Manifest, MonthData, Statement,
};
use super::{month_name, Sums};
use crate::error::{Error, Result};
use crate::rules::Day;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The summary's columns: the issue names all but `month` and `videos`.
const CREATOR_COLUMNS: [&str; 9] = [
    "month",
    "creator_id",
    "videos",
    "views",
    "watch_seconds",
    "ad_views",
    "video_amount",
    "ad_amount",
    "total_amount",
];

/// A statement's columns; `row_type` is `video` for each video's line and
/// `total` for the creator's total, last.
const STATEMENT_COLUMNS: [&str; 11] = [
    "row_type",
    "month",
    "creator_id",
    "video_id",
    "title",
    "views",
    "watch_seconds",
    "ad_views",
    "video_amount",
    "ad_amount",
    "total_amount",
];

/// OWASP's CSV-injection guard: a text cell a spreadsheet would read as a
/// formula gets a leading `'`. Only text columns go through it.
pub(super) fn guard(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

fn sums_cells(s: &Sums) -> [String; 6] {
    [
        s.views.to_string(),
        s.watch_seconds.to_string(),
        s.ad_views.to_string(),
        s.video_amount.to_string(),
        s.ad_amount.to_string(),
        s.total_amount.to_string(),
    ]
}

/// One logical table: a header and rows of cells, with None for NULL.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<Option<String>>>,
}

fn creators_table(month: Day, data: &MonthData) -> Table {
    let rows = data
        .statements
        .iter()
        .filter(|s| !s.lines.is_empty() || s.total != Sums::default())
        .map(|s| {
            let mut r = vec![
                Some(month.to_string()),
                Some(s.creator_id.to_string()),
                Some(s.lines.len().to_string()),
            ];
            r.extend(sums_cells(&s.total).into_iter().map(Some));
            r
        })
        .collect();
    Table {
        columns: &CREATOR_COLUMNS,
        rows,
    }
}

fn statement_table(month: Day, s: &Statement) -> Table {
    let mut rows: Vec<Vec<Option<String>>> = s
        .lines
        .iter()
        .map(|l| {
            let mut r = vec![
                Some("video".into()),
                Some(month.to_string()),
                Some(s.creator_id.to_string()),
                Some(l.video_id.to_string()),
                Some(l.title.clone()),
            ];
            r.extend(sums_cells(&l.sums).into_iter().map(Some));
            r
        })
        .collect();
    let mut total = vec![
        Some("total".into()),
        Some(month.to_string()),
        Some(s.creator_id.to_string()),
        None,
        None,
    ];
    total.extend(sums_cells(&s.total).into_iter().map(Some));
    rows.push(total);
    Table {
        columns: &STATEMENT_COLUMNS,
        rows,
    }
}

fn csv_bytes(t: &Table, bom: bool) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if bom {
        buf.extend_from_slice(BOM);
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(buf);
    let fail = |e: csv::Error| Error::Tool(format!("writing CSV: {e}"));
    w.write_record(t.columns).map_err(fail)?;
    for r in &t.rows {
        w.write_record(r.iter().enumerate().map(|(i, c)| match c {
            // "title" is the only free text; the rest are numbers, dates
            // and fixed words that must reach the reader untouched.
            Some(text) if t.columns[i] == "title" => guard(text),
            Some(text) => text.clone(),
            None => String::new(),
        }))
        .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| Error::Tool(format!("writing CSV: {e}")))
}

/// The Arrow type of an export column.
fn arrow_type(column: &str) -> DataType {
    match column {
        "row_type" | "title" => DataType::Utf8,
        "month" => DataType::Date32,
        _ => DataType::Int64,
    }
}

fn parquet_bytes(t: &Table, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let fields: Vec<Field> = t
        .columns
        .iter()
        .map(|c| {
            let nullable = matches!(*c, "video_id" | "title");
            Field::new(*c, arrow_type(c), nullable)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let fail = |e: String| Error::Tool(format!("writing Parquet: {e}"));
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(t.columns.len());
    for (i, c) in t.columns.iter().enumerate() {
        let cells = t.rows.iter().map(|r| r[i].as_deref());
        arrays.push(match arrow_type(c) {
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                cells.for_each(|v| b.append_option(v));
                Arc::new(b.finish())
            }
            DataType::Date32 => {
                let mut b = Date32Builder::new();
                for v in cells {
                    let day = v
                        .and_then(|s| s.parse::<chrono::NaiveDate>().ok())
                        .map(|d| Day::from_date(d).0);
                    b.append_option(day);
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = Int64Builder::new();
                for v in cells {
                    b.append_option(v.and_then(|s| s.parse::<i64>().ok()));
                }
                Arc::new(b.finish())
            }
        });
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| fail(e.to_string()))?;
    let kv = metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut w =
        ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| fail(e.to_string()))?;
    w.write(&batch).map_err(|e| fail(e.to_string()))?;
    w.into_inner().map_err(|e| fail(e.to_string()))
}

fn entry(path: String, bytes: &[u8], rows: u64, sums: &Sums) -> FileEntry {
    FileEntry {
        path,
        rows,
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
        views: sums.views,
        watch_seconds: sums.watch_seconds,
        ad_views: sums.ad_views,
        video_amount: sums.video_amount,
        ad_amount: sums.ad_amount,
        total_amount: sums.total_amount,
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

/// Writes `bytes` to `dir/rel` and flushes it to disk.
fn put(dir: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mut f = fs::File::create(&path).map_err(io("creating", &path))?;
    f.write_all(bytes).map_err(io("writing", &path))?;
    f.sync_all().map_err(io("flushing", &path))
}

/// An export's files as (path inside the export, bytes), in writing order.
type Files = Vec<(String, Vec<u8>)>;

/// Renders every file of the export, in a fixed order.
fn render(req: &ExportRequest, data: &MonthData) -> Result<(Manifest, Files)> {
    let month = super::month(req.month);
    let ext = req.format.extension();
    let metadata = vec![
        (
            "settle.execution_id".to_string(),
            data.execution_id.to_string(),
        ),
        ("settle.month".to_string(), month_name(month.start)),
    ];
    let encode = |t: &Table| match req.format {
        Format::Csv => csv_bytes(t, req.bom),
        Format::Parquet => parquet_bytes(t, &metadata),
    };
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let mut totals = Sums::default();
    for s in &data.statements {
        totals.add(&s.total);
    }
    let summary = creators_table(month.start, data);
    let bytes = encode(&summary)?;
    let path = format!("creators.{ext}");
    entries.push(entry(
        path.clone(),
        &bytes,
        summary.rows.len() as u64,
        &totals,
    ));
    files.push((path, bytes));
    for s in &data.statements {
        let t = statement_table(month.start, s);
        let bytes = encode(&t)?;
        let path = format!("statements/creator_{}.{ext}", s.creator_id);
        entries.push(entry(path.clone(), &bytes, t.rows.len() as u64, &s.total));
        files.push((path, bytes));
    }
    let manifest = Manifest {
        format_version: 1,
        month: month_name(month.start),
        first_day: month.start,
        last_day: month.last_day(),
        creator: req.creator,
        format: req.format,
        bom: req.bom && req.format == Format::Csv,
        execution_id: data.execution_id,
        settled_range: ExecutionRange {
            first_day: data.execution_range.0.clone(),
            last_day: data.execution_range.1.clone(),
        },
        settled_by: data.settled_by.clone(),
        creators: summary.rows.len() as u64,
        videos: data.statements.iter().map(|s| s.lines.len() as u64).sum(),
        totals,
        files: entries,
    };
    let mut json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Tool(format!("writing the manifest: {e}")))?;
    json.push(b'\n');
    files.push(("manifest.json".into(), json));
    let sums: String = files
        .iter()
        .map(|(p, b)| format!("{}  {p}\n", hex::encode(Sha256::digest(b))))
        .collect();
    files.push(("SHA256SUMS".into(), sums.into_bytes()));
    files.push(("_SUCCESS".into(), Vec::new()));
    Ok((manifest, files))
}

/// Renders and writes the export; returns the manifest and each file's size.
pub(super) fn write(
    req: &ExportRequest,
    data: &MonthData,
) -> Result<(Manifest, Vec<(String, u64)>)> {
    let (manifest, files) = render(req, data)?;
    let out = &req.out;
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--out {} names no directory", out.display())))?
        .to_string_lossy()
        .to_string();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let pid = std::process::id();
    let temp = parent.join(format!(".{name}.partial-{pid}"));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io("removing", &temp))?;
    }
    fs::create_dir_all(&temp).map_err(io("creating", &temp))?;
    let written = (|| {
        // _SUCCESS is last in `files`, so it is written last.
        for (rel, bytes) in &files {
            put(&temp, rel, bytes)?;
        }
        sync_dir(&temp)?;
        place(&temp, out, &parent, &name, pid)
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    written?;
    Ok((
        manifest,
        files
            .iter()
            .map(|(p, b)| (p.clone(), b.len() as u64))
            .collect(),
    ))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flushing", dir))
}

/// Renames the finished `temp` to `out`. An earlier export there is moved
/// aside first and removed after; anything else there is refused.
fn place(temp: &Path, out: &Path, parent: &Path, name: &str, pid: u32) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .map_err(io("reading", out))?
            .next()
            .is_none();
        if empty {
            fs::remove_dir(out).map_err(io("removing", out))?;
        } else if out.join("manifest.json").is_file() {
            let old = parent.join(format!(".{name}.old-{pid}"));
            fs::rename(out, &old).map_err(io("moving aside", out))?;
            fs::rename(temp, out).map_err(io("renaming into place", temp))?;
            sync_dir(parent)?;
            return fs::remove_dir_all(&old).map_err(io("removing", &old));
        } else {
            return Err(Error::Usage(format!(
                "{} exists and is not an earlier settle export; choose another --out",
                out.display()
            )));
        }
    }
    fs::rename(temp, out).map_err(io("renaming into place", temp))?;
    sync_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::guard;

    #[test]
    fn formula_cells_are_guarded_and_others_kept() {
        assert_eq!(guard("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(guard("+1"), "'+1");
        assert_eq!(guard("-1"), "'-1");
        assert_eq!(guard("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(guard("\tx"), "'\tx");
        assert_eq!(guard("제주 여행 =1"), "제주 여행 =1");
        assert_eq!(guard(""), "");
    }
}
