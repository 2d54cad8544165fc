//! Room tokens: an arbitrary token and room against fixed secrets, and claims built from the
//! input issued then verified. Input: `token\nroom\nname`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_sfu::token::{issue, verify, Claims, TokenError};

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (token, room, name) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let secrets = vec!["old".to_string(), "fuzz-secret".to_string()];
    // Whatever passes (only seeds signed with a secret can) is for this room and unexpired.
    if let Ok(Some(c)) = verify(&secrets, Some(token), room, NOW) {
        assert_eq!(c.room, room);
        assert!(c.exp >= NOW);
    }

    // What we issue verifies to the same claims, for its room only, until it expires.
    let exp = NOW + data.len() as u64;
    let claims = Claims {
        room: room.to_owned(),
        exp,
        name: (!name.is_empty()).then(|| name.to_owned()),
    };
    let t = issue("fuzz-secret", &claims);
    assert_eq!(verify(&secrets, Some(&t), room, NOW), Ok(Some(claims)));
    assert_eq!(
        verify(&secrets, Some(&t), room, exp + 1),
        Err(TokenError::Expired)
    );
    let other = format!("{room}x");
    assert_eq!(
        verify(&secrets, Some(&t), &other, NOW),
        Err(TokenError::WrongRoom)
    );
    assert_eq!(
        verify(&["x".into()], Some(&t), room, NOW),
        Err(TokenError::BadSignature)
    );
});
