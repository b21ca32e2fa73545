//! The media backends: implementations of the core's [`Media`](crate::core::ports::Media)
//! port. [`local`] keeps objects in a directory (the embedded default, `./chatd-data/media`);
//! [`s3`] keeps them in an S3-compatible object store (AWS S3, SeaweedFS, MinIO...) and lets
//! clients upload and download directly with presigned requests.
//!
//! Both stand on the `object_store` crate; the operations they share (size, bounded read,
//! idempotent delete) live here.

pub mod local;
pub mod s3;

use std::ops::Range;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::core::ports::{ByteRange, MediaError};

/// The offsets `range` selects in an object of `total` bytes, as HTTP defines a single
/// range: an end past the object is cut to it; `None` when no byte is selected (a start at
/// or past the end, an empty suffix, an empty object, or a reversed range).
pub fn resolve_range(range: &ByteRange, total: u64) -> Option<Range<u64>> {
    let selected = match range {
        ByteRange::Bounded(offsets) => offsets.start..offsets.end.min(total),
        ByteRange::From(start) => *start..total,
        ByteRange::Last(count) => total.saturating_sub(*count)..total,
    };
    (selected.start < selected.end).then_some(selected)
}

/// The object store path of a chatd key (`uploads/<id>`); refuses keys that are not plain
/// relative paths (empty segments, `.` or `..`).
fn object_path(key: &str) -> Result<Path, MediaError> {
    Path::parse(key).map_err(MediaError::backend)
}

/// Maps an object store error: a missing object is [`MediaError::NotFound`].
fn store_error(err: object_store::Error) -> MediaError {
    match err {
        object_store::Error::NotFound { .. } => MediaError::NotFound,
        other => MediaError::backend(other),
    }
}

/// The stored length of the object under `key`, or `None`.
async fn object_size(store: &dyn ObjectStore, key: &str) -> Result<Option<u64>, MediaError> {
    match store.head(&object_path(key)?).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(err) => Err(MediaError::backend(err)),
    }
}

/// The object's bytes, refused with `TooLarge` past `max` bytes before any is read (and
/// again after, should the object have been replaced by a larger one meanwhile).
async fn read_bounded(store: &dyn ObjectStore, key: &str, max: u64) -> Result<Bytes, MediaError> {
    let path = object_path(key)?;
    let size = store.head(&path).await.map_err(store_error)?.size;
    if size > max {
        return Err(MediaError::TooLarge(max));
    }
    let bytes = store.get(&path).await.map_err(store_error)?.bytes().await.map_err(store_error)?;
    if bytes.len() as u64 > max {
        return Err(MediaError::TooLarge(max));
    }
    Ok(bytes)
}

/// Deletes the object under `key`; a missing object is already deleted.
async fn delete_object(store: &dyn ObjectStore, key: &str) -> Result<(), MediaError> {
    match store.delete(&object_path(key)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(err) => Err(MediaError::backend(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_as_http_defines_them() {
        assert_eq!(resolve_range(&ByteRange::Bounded(2..5), 10), Some(2..5));
        assert_eq!(resolve_range(&ByteRange::Bounded(8..20), 10), Some(8..10));
        assert_eq!(resolve_range(&ByteRange::Bounded(10..12), 10), None);
        assert_eq!(resolve_range(&ByteRange::From(3), 10), Some(3..10));
        assert_eq!(resolve_range(&ByteRange::From(10), 10), None);
        assert_eq!(resolve_range(&ByteRange::Last(4), 10), Some(6..10));
        assert_eq!(resolve_range(&ByteRange::Last(40), 10), Some(0..10));
        assert_eq!(resolve_range(&ByteRange::Last(0), 10), None);
        assert_eq!(resolve_range(&ByteRange::From(0), 0), None);
    }
}
