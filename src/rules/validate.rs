//! Row validation: a row that fails counts for nothing and is recorded.

/// Why a row was rejected; the names are the SPEC's reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    UnknownVideo,
    BadPosition,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::UnknownVideo => "unknown_video",
            Reject::BadPosition => "bad_position",
        }
    }
}

/// `duration` is the video's `duration_seconds`, or `None` when the video is
/// not in `videos`. An unknown video is reported before any position check.
#[inline]
pub fn validate(start: i32, end: i32, duration: Option<i32>) -> Result<(), Reject> {
    let Some(duration) = duration else {
        return Err(Reject::UnknownVideo);
    };
    if 0 <= start && start <= end && end <= duration {
        Ok(())
    } else {
        Err(Reject::BadPosition)
    }
}
