"""ita client SDK: units (decimal strings <-> integer units), keys, transaction building and signing."""
