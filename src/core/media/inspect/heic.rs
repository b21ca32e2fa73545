//! Metadata scrubbing for HEIC/HEIF (ISO/IEC 23008-12) files without decoding them.
//!
//! The top-level `meta` box (handler `pict`) lists items in `iinf` and where their
//! bytes live in `iloc`. Exif items (`infe` item type `Exif`) and XMP items (`mime`
//! items of content type `application/rdf+xml`) are overwritten with zeros in place,
//! so every offset in the file stays valid and the length is unchanged.

use std::ops::Range;

/// Why a HEIF structure was rejected; shown to the client inside a refusal.
pub(super) type ParseError = &'static str;

/// Upper bound on `iloc` extents walked, so a hostile `iloc` cannot spin the CPU.
const MAX_EXTENTS: usize = 1_000_000;

/// One ISOBMFF box: its four-character type and the byte ranges it covers.
#[derive(Debug, Clone, Copy)]
struct BoxSpan {
    kind: [u8; 4],
    /// Where the payload (after size, type and any `uuid` extension) starts.
    body: usize,
    /// One past the last byte of the box.
    end: usize,
}

/// Blanks Exif and XMP items of a HEIF file in place. Returns how many items were blanked.
pub(super) fn scrub(file: &mut [u8]) -> Result<usize, ParseError> {
    let ranges = sensitive_ranges(file)?;
    for range in &ranges {
        file[range.clone()].fill(0);
    }
    Ok(ranges.len())
}

/// The byte ranges (in file coordinates) that hold Exif or XMP item data.
fn sensitive_ranges(file: &[u8]) -> Result<Vec<Range<usize>>, ParseError> {
    let top = children(file, 0, file.len())?;
    let mut metas = top.iter().filter(|b| &b.kind == b"meta");
    let meta = metas.next().ok_or("no meta box")?;
    if metas.next().is_some() {
        return Err("more than one meta box");
    }
    // `meta` is a full box: version and flags precede its children.
    let inner = children(file, meta.body.checked_add(4).ok_or("truncated")?, meta.end)?;
    let find = |kind: &[u8; 4]| inner.iter().find(|b| &b.kind == kind).copied();

    let hdlr = find(b"hdlr").ok_or("no hdlr box")?;
    let mut fields = Fields::new(file, hdlr.body, hdlr.end);
    fields.skip(8)?; // version, flags, pre_defined
    if &fields.fourcc()? != b"pict" {
        return Err("the meta handler is not pict");
    }

    let iinf = find(b"iinf").ok_or("no iinf box")?;
    let sensitive_items = sensitive_item_ids(file, iinf)?;
    if sensitive_items.is_empty() {
        return Ok(Vec::new());
    }
    let iloc = find(b"iloc").ok_or("no iloc box")?;
    let idat = find(b"idat").map(|b| b.body..b.end);
    let mut ranges = Vec::new();
    for location in item_locations(file, iloc)? {
        if !sensitive_items.contains(&location.item_id) {
            continue;
        }
        for extent in &location.extents {
            ranges.push(resolve_extent(&location, extent, file.len(), idat.as_ref())?);
        }
    }
    Ok(ranges)
}

/// Turns one `iloc` extent into a file byte range, checking it lies inside the file.
fn resolve_extent(
    location: &ItemLocation,
    extent: &Extent,
    file_len: usize,
    idat: Option<&Range<usize>>,
) -> Result<Range<usize>, ParseError> {
    let container = match location.construction_method {
        0 if location.data_reference_index == 0 => 0..file_len,
        0 => return Err("item data lives in another file"),
        1 => idat.cloned().ok_or("item data refers to a missing idat box")?,
        _ => return Err("item data is built from other items"),
    };
    let relative = location.base_offset.checked_add(extent.offset).ok_or("item offset overflows")?;
    let start = u64::try_from(container.start)
        .ok()
        .and_then(|s| s.checked_add(relative))
        .and_then(|s| usize::try_from(s).ok())
        .ok_or("item offset overflows")?;
    let end = if extent.length == 0 {
        container.end
    } else {
        usize::try_from(extent.length)
            .ok()
            .and_then(|len| start.checked_add(len))
            .ok_or("item length overflows")?
    };
    if start > end || end > container.end {
        return Err("item data lies outside the file");
    }
    Ok(start..end)
}

/// Item ids of Exif items and XMP (`application/rdf+xml`) items listed in `iinf`.
fn sensitive_item_ids(file: &[u8], iinf: BoxSpan) -> Result<Vec<u32>, ParseError> {
    let mut fields = Fields::new(file, iinf.body, iinf.end);
    let version = fields.u8()?;
    fields.skip(3)?;
    // The entry count is not trusted: every `infe` child is examined.
    fields.skip(if version == 0 { 2 } else { 4 })?;
    let entries = children(file, fields.pos, iinf.end)?;
    let mut ids = Vec::new();
    for entry in entries.iter().filter(|b| &b.kind == b"infe") {
        if let Some(id) = sensitive_infe(file, *entry)? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Parses one `infe` box; returns its item id when it carries Exif or XMP.
fn sensitive_infe(file: &[u8], infe: BoxSpan) -> Result<Option<u32>, ParseError> {
    let mut fields = Fields::new(file, infe.body, infe.end);
    let version = fields.u8()?;
    fields.skip(3)?;
    let is_xmp = |content_type: &[u8]| content_type.eq_ignore_ascii_case(b"application/rdf+xml");
    if version < 2 {
        let item_id = u32::from(fields.u16()?);
        fields.skip(2)?; // item_protection_index
        fields.c_string()?; // item_name
        let content_type = fields.c_string()?;
        return Ok(is_xmp(content_type).then_some(item_id));
    }
    let item_id = if version == 2 { u32::from(fields.u16()?) } else { fields.u32()? };
    fields.skip(2)?; // item_protection_index
    let item_type = fields.fourcc()?;
    let sensitive = match &item_type {
        b"Exif" => true,
        b"mime" => {
            fields.c_string()?; // item_name
            is_xmp(fields.c_string()?)
        }
        _ => false,
    };
    Ok(sensitive.then_some(item_id))
}

/// One `iloc` entry.
#[derive(Debug)]
struct ItemLocation {
    item_id: u32,
    construction_method: u8,
    data_reference_index: u16,
    base_offset: u64,
    extents: Vec<Extent>,
}

/// One extent of an `iloc` entry, relative to the entry's base offset.
#[derive(Debug)]
struct Extent {
    offset: u64,
    length: u64,
}

/// Parses the `iloc` box (versions 0, 1 and 2).
fn item_locations(file: &[u8], iloc: BoxSpan) -> Result<Vec<ItemLocation>, ParseError> {
    let mut fields = Fields::new(file, iloc.body, iloc.end);
    let version = fields.u8()?;
    if version > 2 {
        return Err("unknown iloc version");
    }
    fields.skip(3)?;
    let sizes = fields.u8()?;
    let (offset_size, length_size) = (sizes >> 4, sizes & 0x0F);
    let sizes = fields.u8()?;
    let base_offset_size = sizes >> 4;
    let index_size = if version == 0 { 0 } else { sizes & 0x0F };
    let item_count = if version < 2 { u32::from(fields.u16()?) } else { fields.u32()? };
    let mut locations = Vec::new();
    let mut extents_seen = 0usize;
    for _ in 0..item_count {
        let item_id = if version < 2 { u32::from(fields.u16()?) } else { fields.u32()? };
        let construction_method = if version == 0 { 0 } else { (fields.u16()? & 0x0F) as u8 };
        let data_reference_index = fields.u16()?;
        let base_offset = fields.sized(base_offset_size)?;
        let extent_count = fields.u16()?;
        extents_seen = extents_seen.saturating_add(usize::from(extent_count));
        if extents_seen > MAX_EXTENTS {
            return Err("too many iloc extents");
        }
        let mut extents = Vec::with_capacity(usize::from(extent_count));
        for _ in 0..extent_count {
            fields.sized(index_size)?;
            let offset = fields.sized(offset_size)?;
            let length = fields.sized(length_size)?;
            extents.push(Extent { offset, length });
        }
        locations.push(ItemLocation {
            item_id,
            construction_method,
            data_reference_index,
            base_offset,
            extents,
        });
    }
    Ok(locations)
}

/// Splits `file[start..end]` into consecutive boxes; every byte must belong to one.
fn children(file: &[u8], start: usize, end: usize) -> Result<Vec<BoxSpan>, ParseError> {
    let mut spans = Vec::new();
    let mut pos = start;
    while pos < end {
        let mut fields = Fields::new(file, pos, end);
        let size32 = fields.u32()?;
        let kind = fields.fourcc()?;
        let box_end = match size32 {
            0 => end,
            1 => {
                let size = usize::try_from(fields.u64()?).map_err(|_| "box too large")?;
                pos.checked_add(size).ok_or("box too large")?
            }
            size => {
                pos.checked_add(usize::try_from(size).map_err(|_| "box too large")?).ok_or("box too large")?
            }
        };
        if &kind == b"uuid" {
            fields.skip(16)?;
        }
        if box_end < fields.pos || box_end > end {
            return Err("box size is inconsistent");
        }
        spans.push(BoxSpan { kind, body: fields.pos, end: box_end });
        pos = box_end;
    }
    Ok(spans)
}

/// A bounds-checked big-endian field reader over `data[pos..end]`.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8], pos: usize, end: usize) -> Self {
        Fields { data, pos, end: end.min(data.len()) }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], ParseError> {
        let stop = self.pos.checked_add(count).ok_or("truncated")?;
        if stop > self.end {
            return Err("truncated");
        }
        let slice = self.data.get(self.pos..stop).ok_or("truncated")?;
        self.pos = stop;
        Ok(slice)
    }

    fn skip(&mut self, count: usize) -> Result<(), ParseError> {
        self.take(count).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        self.take(N)?.try_into().map_err(|_| "truncated")
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        self.array().map(u64::from_be_bytes)
    }

    fn fourcc(&mut self) -> Result<[u8; 4], ParseError> {
        self.array()
    }

    /// An unsigned field of 0, 4 or 8 bytes, as `iloc` encodes offsets and lengths.
    fn sized(&mut self, size: u8) -> Result<u64, ParseError> {
        match size {
            0 => Ok(0),
            4 => self.u32().map(u64::from),
            8 => self.u64(),
            _ => Err("invalid iloc field size"),
        }
    }

    /// A NUL-terminated string; a missing terminator ends it at the box end.
    fn c_string(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = self.data.get(self.pos..self.end).ok_or("truncated")?;
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let text = self.take(len)?;
        if self.pos < self.end {
            self.pos += 1;
        }
        Ok(text)
    }
}
