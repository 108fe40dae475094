//! Property test: escaped ids never collide and never carry a character that would break the
//! key schema.

use proptest::prelude::*;
use roomcast_store::keys::escape;

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(?s).{0,40}").unwrap()
}

proptest! {
    #[test]
    fn escaped_ids_are_distinct_and_inert(a in text(), b in text()) {
        let (ea, eb) = (escape(&a), escape(&b));
        prop_assert_eq!(ea == eb, a == b);
        let special = [':', '{', '}', '*', ' ', '\n'];
        prop_assert!(!ea.contains(special), "escape left a special character in {}", ea);
    }
}
