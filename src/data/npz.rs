//! NumPy `.npz` archives read from their bytes, with every size checked before it is trusted.
//!
//! tch's own `Tensor::read_npz` unwraps zip entries it cannot open and hands libtorch a shape
//! it never compares with the bytes behind it, so a file that declares more elements than it
//! holds makes libtorch read past the buffer. A paired file is user input (`diffgap train
//! --data`), so it is read here instead: the archive from memory, each `.npy` header parsed
//! with bounded lengths, and the data's length required to equal the declared shape's before a
//! tensor is made.

use std::io::{Cursor, Read};

use tch::{Kind, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";
/// A real header is a few hundred bytes; a longer one is a broken or hostile file.
const MAX_HEADER: usize = 64 * 1024;
/// The largest array accepted, in bytes (4 GiB: far above any paired file of this project).
const MAX_ARRAY_BYTES: u64 = 4 << 30;

/// Reads every array of an npz archive, named by its entry without the `.npy` suffix.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("zip: {e}"))?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = entry.name().to_owned();
        let name = name.strip_suffix(".npy").unwrap_or(&name).to_owned();
        let tensor = read_npy(&mut entry).map_err(|e| format!("array '{name}': {e}"))?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// One `.npy` stream: magic, version, header, then exactly the declared number of bytes.
fn read_npy(r: &mut impl Read) -> Result<Tensor, String> {
    let header = read_header(r)?;
    let (kind, shape) = parse_header(&header)?;
    let want = data_bytes(kind, &shape)?;
    let mut data = Vec::new();
    r.take(want + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("data: {e}"))?;
    if data.len() as u64 != want {
        return Err(format!(
            "shape {shape:?} needs {want} bytes of data, the file has {}{}",
            data.len().min(want as usize),
            if data.len() as u64 > want {
                " and more"
            } else {
                ""
            }
        ));
    }
    Tensor::f_from_data_size(&data, &shape, kind).map_err(|e| e.to_string())
}

fn read_header(r: &mut impl Read) -> Result<String, String> {
    let mut start = [0u8; 8];
    r.read_exact(&mut start)
        .map_err(|e| format!("header: {e}"))?;
    if &start[..6] != MAGIC {
        return Err("not an npy array (magic string mismatch)".into());
    }
    let len_bytes = match start[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(format!("unsupported npy version {v}")),
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len[..len_bytes])
        .map_err(|e| format!("header: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes is longer than {MAX_HEADER}"));
    }
    let mut header = vec![0u8; len];
    r.read_exact(&mut header)
        .map_err(|e| format!("header: {e}"))?;
    String::from_utf8(header).map_err(|_| "header is not UTF-8".into())
}

/// The dtype and shape of a header such as `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`.
fn parse_header(header: &str) -> Result<(Kind, Vec<i64>), String> {
    let descr = quoted_value(header, "descr").ok_or("header has no 'descr'")?;
    let kind = kind_of(descr)?;
    match value_after(header, "fortran_order").map(|v| v.trim_start()) {
        Some(v) if v.starts_with("False") => {}
        Some(v) if v.starts_with("True") => {
            return Err("Fortran-ordered arrays are not read".into())
        }
        _ => return Err("header has no valid 'fortran_order'".into()),
    }
    let shape = value_after(header, "shape").ok_or("header has no 'shape'")?;
    let shape = shape.trim_start();
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or("'shape' is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().map_err(|_| format!("bad dimension '{s}'")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((kind, shape))
}

fn value_after<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    rest.trim_start().strip_prefix(':')
}

fn quoted_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let v = value_after(header, key)?.trim_start().strip_prefix('\'')?;
    v.split_once('\'').map(|(v, _)| v)
}

fn kind_of(descr: &str) -> Result<Kind, String> {
    let code = descr
        .strip_prefix(['<', '|', '='])
        .ok_or_else(|| format!("dtype '{descr}' is not little-endian"))?;
    Ok(match code {
        "f2" => Kind::Half,
        "f4" => Kind::Float,
        "f8" => Kind::Double,
        "i1" => Kind::Int8,
        "i2" => Kind::Int16,
        "i4" => Kind::Int,
        "i8" => Kind::Int64,
        "u1" => Kind::Uint8,
        "b1" => Kind::Bool,
        _ => return Err(format!("dtype '{descr}' is not supported")),
    })
}

fn data_bytes(kind: Kind, shape: &[i64]) -> Result<u64, String> {
    let mut n = kind.elt_size_in_bytes() as u64;
    for &d in shape {
        let d = u64::try_from(d).map_err(|_| format!("negative dimension in {shape:?}"))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ARRAY_BYTES)
            .ok_or_else(|| format!("shape {shape:?} is larger than {MAX_ARRAY_BYTES} bytes"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npz_of(t: &Tensor) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.npz");
        Tensor::write_npz(&[("x", t)], &path).expect("write");
        std::fs::read(path).expect("read")
    }

    #[test]
    fn reads_what_tch_writes() {
        let t = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
        let got = read(&npz_of(&t)).expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "x");
        assert_eq!(got[0].1.size(), vec![3, 4]);
        assert!(got[0].1.equal(&t));
    }

    fn npz_with(npy: &[u8]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("x.npy", stored).expect("entry");
        std::io::Write::write_all(&mut zip, npy).expect("write");
        zip.finish().expect("finish").into_inner()
    }

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((header.len() as u16).to_le_bytes());
        v.extend(header.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn a_shape_larger_than_the_data_is_refused() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (9, 4), }";
        let err = read(&npz_with(&npy(header, &[0u8; 48]))).expect_err("refused");
        assert!(err.contains("needs 144 bytes"), "{err}");
        let ok = read(&npz_with(&npy(header, &[0u8; 144]))).expect("exact size");
        assert_eq!(ok[0].1.size(), vec![9, 4]);
        let err = read(&npz_with(&npy(header, &[0u8; 145]))).expect_err("refused");
        assert!(err.contains("and more"), "{err}");
    }

    #[test]
    fn headers_are_parsed_strictly() {
        assert!(parse_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }").is_err());
        assert!(parse_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }").is_err());
        assert!(parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }").is_ok());
        assert!(data_bytes(Kind::Float, &[-2]).is_err());
        assert!(
            parse_header("{'descr': '\u{e9}f4', 'fortran_order': False, 'shape': (2,), }").is_err()
        );
        assert!(data_bytes(Kind::Float, &[i64::MAX, i64::MAX]).is_err());
        let (k, s) = parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (), }")
            .expect("scalar");
        assert_eq!((k, s), (Kind::Int64, vec![]));
    }
}
