//! Parses arbitrary bytes as a STUN message and runs everything the server would on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_turn::stun::{attr, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let txid = msg.transaction_id();
    let _ = (msg.method(), msg.class(), msg.has_fingerprint());
    for a in msg.attrs() {
        let v = a.value;
        match a.typ {
            attr::XOR_MAPPED_ADDRESS | attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS => {
                let _ = attr::xor_address(v, &txid);
            }
            attr::LIFETIME => {
                let _ = attr::u32_value(v);
            }
            attr::CHANNEL_NUMBER => {
                let _ = attr::channel_number(v);
            }
            attr::REQUESTED_TRANSPORT => {
                let _ = attr::requested_transport(v);
            }
            attr::REQUESTED_ADDRESS_FAMILY | attr::ADDITIONAL_ADDRESS_FAMILY => {
                let _ = attr::address_family(v);
            }
            attr::ERROR_CODE => {
                let _ = attr::error_code(v);
            }
            attr::USERNAME | attr::REALM | attr::NONCE | attr::SOFTWARE => {
                let _ = attr::text_for(a.typ, v);
            }
            _ => {}
        }
    }
    for typ in [attr::USERNAME, attr::REALM, attr::NONCE] {
        let _ = msg.get_text(typ);
    }
    let _ = msg.get_xor_address(attr::XOR_PEER_ADDRESS);
    let _ = msg.check_integrity(b"fuzz-key");
    let _ = msg.unknown_required(|t| t == attr::USERNAME, &mut [0u16; 8]);
});
