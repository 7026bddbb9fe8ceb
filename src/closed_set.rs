//! `closed_set!`: an enum for a closed set of words of the contract or of Glance
//! (`disk_format`, `visibility`, an upload's phase, ...), with its text form
//! written once: `as_str`, `Display`, `FromStr` (whose error lists the
//! allowed words) and `Serialize` as that text.

/// Declares `enum Name { Variant = "text", ... }` with `ALL`, `as_str`,
/// `Display`, `FromStr` and `Serialize`.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every member, in the order declared.
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as the contract (and Glance) writes it.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            /// "'x' is not one of a, b, c".
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|member| member.as_str() == text)
                    .ok_or_else(|| {
                        let allowed: Vec<&str> = Self::ALL.iter().map(|m| m.as_str()).collect();
                        format!("'{text}' is not one of {}", allowed.join(", "))
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}
