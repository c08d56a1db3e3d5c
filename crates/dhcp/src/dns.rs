//! Domain names in DNS wire format (RFC 1035 section 3.1, no compression), as DHCP options carry
//! them: the domain search list (DHCPv4 option 119, RFC 3397; DHCPv6 option 24, RFC 3646).

/// The wire form of `names` one after the other (each a sequence of length-prefixed labels
/// ending with the root's empty label). A trailing dot is accepted and means the same. `None`
/// when a name is empty or has an empty label, a label over 63 bytes or a wire form over 255.
pub fn encode_domain_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for name in names {
        let name = name.strip_suffix('.').unwrap_or(name);
        let start = out.len();
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        if out.len() - start > 255 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_wire_format() {
        assert_eq!(
            encode_domain_names(["openstacklocal."]),
            Some(b"\x0eopenstacklocal\x00".to_vec())
        );
        assert_eq!(
            encode_domain_names(["eng.example.org", "example.org"]),
            Some(b"\x03eng\x07example\x03org\x00\x07example\x03org\x00".to_vec())
        );
        assert_eq!(encode_domain_names([]), Some(Vec::new()));
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["", ".", "a..b", ".a"] {
            assert_eq!(encode_domain_names([bad]), None, "{bad:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(encode_domain_names([long_label.as_str()]), None);
        let label = "a".repeat(63);
        let long_name = [label.as_str(); 4].join(".");
        assert_eq!(encode_domain_names([long_name.as_str()]), None, "256 bytes");
        let fits = [
            label.as_str(),
            label.as_str(),
            label.as_str(),
            "a".repeat(61).as_str(),
        ]
        .join(".");
        assert_eq!(
            encode_domain_names([fits.as_str()]).map(|w| w.len()),
            Some(255)
        );
    }
}
