//! Serde adapters of the configuration's fields: clap value enums by their names, and
//! types through `Display`/`FromStr`.

/// The name clap knows a value by (`text`, `step`...).
pub(super) fn value_name<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// (De)serializes a clap value enum by its value names.
pub(super) mod as_value_enum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: clap::ValueEnum, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::value_name(v.clone()))
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: clap::ValueEnum,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        T::from_str(&s, true).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .map(|v| super::value_name(v.clone()))
                .collect();
            serde::de::Error::custom(format!("unknown value '{s}', use one of {names:?}"))
        })
    }
}

/// (De)serializes through `Display` and `FromStr`.
pub(super) mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
