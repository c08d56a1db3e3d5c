//! dnsmasq's syntax for option names and values as Neutron passes them (`tag:...,` conditions,
//! comma-separated lists, `xx:xx` hex bytes, integers sized by their value), shared by the
//! DHCPv4 and DHCPv6 `extra_dhcp_opts` code.

/// Splits `tag:a,tag:!b,name` into the tags and the name (the last comma-separated part, as
/// Neutron does).
pub fn split_tags(opt_name: &str) -> (Vec<&str>, &str) {
    match opt_name.rsplit_once(',') {
        Some((tags, name)) if tags.starts_with("tag:") => (
            tags.split(',')
                .map(|t| t.trim().strip_prefix("tag:").unwrap_or(t.trim()))
                .collect(),
            name.trim(),
        ),
        _ => (Vec::new(), opt_name.trim()),
    }
}

/// The comma-separated parts of a value, trimmed.
pub fn parts(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// `xx:xx:...` (one or two hex digits per byte) as bytes.
pub fn hex_bytes(value: &str) -> Option<Vec<u8>> {
    if !value.contains(':') {
        return None;
    }
    value
        .split(':')
        .map(|b| {
            (1..=2)
                .contains(&b.len())
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect()
}

/// A decimal integer in as few of 1, 2 or 4 bytes as hold it.
pub fn minimal_int(value: &str) -> Option<Vec<u8>> {
    let n: u32 = value.parse().ok()?;
    Some(if let Ok(b) = u8::try_from(n) {
        vec![b]
    } else if let Ok(w) = u16::try_from(n) {
        w.to_be_bytes().to_vec()
    } else {
        n.to_be_bytes().to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_everything_before_the_last_comma() {
        assert_eq!(split_tags("67"), (vec![], "67"));
        assert_eq!(split_tags(" bootfile-name "), (vec![], "bootfile-name"));
        assert_eq!(split_tags("tag:ipxe,67"), (vec!["ipxe"], "67"));
        assert_eq!(
            split_tags("tag:!ipxe,tag:x,option:bootfile-name"),
            (vec!["!ipxe", "x"], "option:bootfile-name")
        );
        assert_eq!(
            split_tags("a,b"),
            (vec![], "a,b"),
            "no tag: prefix, no tags"
        );
    }

    #[test]
    fn values() {
        assert_eq!(parts(" a, b ,c").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(hex_bytes("01:a:FF"), Some(vec![1, 10, 255]));
        for not_hex in ["0102", "01::02", "001:02", "xx:01"] {
            assert_eq!(hex_bytes(not_hex), None, "{not_hex}");
        }
        assert_eq!(minimal_int("255"), Some(vec![255]));
        assert_eq!(minimal_int("256"), Some(vec![1, 0]));
        assert_eq!(minimal_int("65536"), Some(vec![0, 1, 0, 0]));
        assert_eq!(minimal_int("-1"), None);
        assert_eq!(minimal_int("4294967296"), None);
    }
}
