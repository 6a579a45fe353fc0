//! `JsonObject<T>`: a `T` read only from a JSON object. serde also reads a
//! struct from an array of its fields in order, so `[]` passes as a struct
//! whose fields all have defaults, and `[2, "…", …]` as a manifest. Every
//! JSON body berth takes (manifests, admin requests) is an object.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Settings {
        #[serde(default)]
        on: bool,
        name: Option<String>,
    }

    #[test]
    fn objects_are_read_and_arrays_refused() {
        let JsonObject(s) = serde_json::from_str::<JsonObject<Settings>>(r#"{"on":true}"#).unwrap();
        assert_eq!(
            s,
            Settings {
                on: true,
                name: None
            }
        );
        // What plain serde takes.
        assert!(serde_json::from_str::<Settings>(r#"[true, "x"]"#).is_ok());
        for body in ["[]", r#"[true, "x"]"#, "7", "null"] {
            let e = serde_json::from_str::<JsonObject<Settings>>(body).unwrap_err();
            assert!(e.to_string().contains("a JSON object"), "{body}: {e}");
        }
    }
}
