//! Media on local disk: the embedded default (`./chatd-data/media`). Objects are files under
//! one directory, named by key; each is written to a staging file beside it and renamed into
//! place, so a reader never sees half a file. Clients upload through chatd itself (a `PUT`
//! with the upload's token) and downloads stream through chatd, one byte range at a time.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

use super::{delete_object, object_path, object_size, read_bounded, resolve_range, store_error};
use crate::core::ports::{
    ByteRange, Download, Media, MediaError, ObjectHeaders, ObjectStream, UploadSpec, UploadTarget,
};

/// Media stored as files under one directory.
#[derive(Debug)]
pub struct LocalMedia {
    store: LocalFileSystem,
    base_url: String,
}

impl LocalMedia {
    /// Opens (creating it if needed) the directory `dir`. Upload URLs are `base_url` (chatd's
    /// public origin, no trailing slash) followed by the upload route, or just the route
    /// (relative to chatd's origin) without one.
    pub fn open(dir: &Path, base_url: Option<String>) -> Result<LocalMedia, MediaError> {
        std::fs::create_dir_all(dir).map_err(MediaError::backend)?;
        let store =
            LocalFileSystem::new_with_prefix(dir).map_err(MediaError::backend)?.with_automatic_cleanup(true);
        let base_url = base_url.map(|url| url.trim_end_matches('/').to_owned()).unwrap_or_default();
        Ok(LocalMedia { store, base_url })
    }
}

#[async_trait]
impl Media for LocalMedia {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn upload_target(&self, spec: &UploadSpec) -> Result<UploadTarget, MediaError> {
        let upload_id: String = url::form_urlencoded::byte_serialize(spec.upload_id.as_bytes()).collect();
        let token: String = url::form_urlencoded::byte_serialize(spec.token.as_bytes()).collect();
        let mut headers = serde_json::Map::new();
        headers.insert("Content-Type".to_owned(), spec.content_type.clone().into());
        Ok(UploadTarget {
            method: "PUT",
            url: format!("{}/api/uploads/{upload_id}/content?token={token}", self.base_url),
            headers,
            fields: serde_json::Map::new(),
        })
    }

    fn receives_uploads(&self) -> bool {
        true
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, MediaError> {
        object_size(&self.store, key).await
    }

    async fn read(&self, key: &str, max: u64) -> Result<Bytes, MediaError> {
        read_bounded(&self.store, key, max).await
    }

    /// Local files keep no headers: the caller gives them again at download time.
    async fn put(&self, key: &str, bytes: Bytes, _headers: &ObjectHeaders) -> Result<(), MediaError> {
        self.store.put(&object_path(key)?, PutPayload::from(bytes)).await.map_err(store_error)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), MediaError> {
        delete_object(&self.store, key).await
    }

    /// Streams the file (or the one range asked for); a range with no byte in the file is
    /// [`Download::Unsatisfiable`].
    async fn download(
        &self,
        key: &str,
        range: Option<ByteRange>,
        _headers: &ObjectHeaders,
        _expires_in: Duration,
    ) -> Result<Download, MediaError> {
        let path = object_path(key)?;
        let options = match range {
            None => GetOptions::new(),
            Some(range) => {
                let total = self.store.head(&path).await.map_err(store_error)?.size;
                let Some(offsets) = resolve_range(&range, total) else {
                    return Ok(Download::Unsatisfiable { total });
                };
                GetOptions::new().with_range(Some(offsets))
            }
        };
        let result = self.store.get_opts(&path, options).await.map_err(store_error)?;
        // The length and offsets of the file actually opened (it may have been replaced since).
        let (total, offsets) = (result.meta.size, result.range.clone());
        let body = result.into_stream().map(|chunk| chunk.map_err(store_error)).boxed();
        Ok(Download::Stream(ObjectStream { total, range: offsets, body }))
    }
}
