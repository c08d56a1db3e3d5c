//! Neighbour discovery options (RFC 4861 section 4.6): reading the type-length-value list of a
//! received message (lengths in units of 8 bytes) and writing the options the builders send.

use crate::NdpError;

pub const SOURCE_LINK_LAYER: u8 = 1;
pub const TARGET_LINK_LAYER: u8 = 2;
pub const PREFIX_INFORMATION: u8 = 3;
pub const MTU: u8 = 5;
/// Recursive DNS server option (RFC 8106).
pub const RDNSS: u8 = 25;

/// The options of a message as (type, body after the type and length bytes), in order.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, NdpError> {
    let mut out = Vec::new();
    while let Some(&kind) = bytes.first() {
        let len = usize::from(*bytes.get(1).ok_or(NdpError::TruncatedOption(kind))?) * 8;
        if len == 0 {
            return Err(NdpError::ZeroLengthOption(kind));
        }
        let option = bytes.get(..len).ok_or(NdpError::TruncatedOption(kind))?;
        out.push((kind, &option[2..]));
        bytes = &bytes[len..];
    }
    Ok(out)
}

/// The Ethernet address of the first link-layer address option of type `kind`, if any.
pub fn link_layer(options: &[(u8, &[u8])], kind: u8) -> Result<Option<[u8; 6]>, NdpError> {
    match options.iter().find(|(k, _)| *k == kind) {
        None => Ok(None),
        Some((_, body)) => <[u8; 6]>::try_from(*body)
            .map(Some)
            .map_err(|_| NdpError::BadLinkLayerOption(body.len() + 2)),
    }
}

/// Appends a link-layer address option (8 bytes) of type `kind`.
pub fn put_link_layer(out: &mut Vec<u8>, kind: u8, mac: [u8; 6]) {
    out.extend_from_slice(&[kind, 1]);
    out.extend_from_slice(&mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_in_units_of_eight_bytes() {
        let mut bytes = Vec::new();
        put_link_layer(&mut bytes, SOURCE_LINK_LAYER, [1, 2, 3, 4, 5, 6]);
        bytes.extend_from_slice(&[MTU, 1, 0, 0, 0, 0, 5, 0xdc]);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(
            parsed,
            vec![
                (SOURCE_LINK_LAYER, &[1, 2, 3, 4, 5, 6][..]),
                (MTU, &[0, 0, 0, 0, 5, 0xdc][..])
            ]
        );
        assert_eq!(
            link_layer(&parsed, SOURCE_LINK_LAYER),
            Ok(Some([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(link_layer(&parsed, TARGET_LINK_LAYER), Ok(None));
    }

    #[test]
    fn malformed_options_are_errors() {
        assert_eq!(parse(&[1]), Err(NdpError::TruncatedOption(1)));
        assert_eq!(parse(&[1, 0, 0, 0]), Err(NdpError::ZeroLengthOption(1)));
        assert_eq!(parse(&[3, 1, 0, 0]), Err(NdpError::TruncatedOption(3)));
        let long = [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let parsed = parse(&long).unwrap();
        assert_eq!(
            link_layer(&parsed, SOURCE_LINK_LAYER),
            Err(NdpError::BadLinkLayerOption(16))
        );
    }
}
