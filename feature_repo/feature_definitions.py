"""Feast definitions for genctr: entities, sources, feature views, feature services.

Sources point at a feature build's Feast tables (``genctr.features.layout``) by paths
relative to the build directory; ``genctr.features.feast_sync`` resolves them against the
build it materialises. Sequences hold raw ids (the model maps them through the build's
vocabularies), the last ``max_seq_len`` behaviours, oldest first, never null (empty list
for a user without behaviours).

TTL: both views have ``ttl=timedelta(0)``, which Feast reads as "no TTL": a point-in-time join
takes the latest row at or before the event however old it is, and a behaviour sequence stays
valid until the user acts again. ``feast materialize-incremental`` starts each view at the end
of its last recorded materialisation; only a view that was never materialised falls back to
``now - ttl``, and for ttl=0 to ``now - 52 weeks`` (older rows would then never load). genctr
never leaves a view in that state: ``genctr features materialize`` (and the pipeline's step)
runs ``FeatureStore.materialize`` from 1970 to now, so Feast records the interval and every
incremental run after it loads exactly the rows stamped since.
"""
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Int64

# --- entities -------------------------------------------------------------------------------

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user, by raw user id (the id of the canonical events).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="An item (ad), by raw item id.",
)

# --- sources --------------------------------------------------------------------------------

user_behavior_seq_source = FileSource(
    name="user_behavior_seq_source",
    path="feast/user_behavior_seq",
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per user, stamped at the user's latest behaviour (feature build).",
)

item_features_source = FileSource(
    name="item_features_source",
    path="feast/item_features",
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per item, stamped at its first impression (feature build).",
)

# --- feature views --------------------------------------------------------------------------

user_behavior_seq_fv = FeatureView(
    name="user_behavior_seq",
    entities=[user],
    ttl=timedelta(0),  # no TTL (see the module docstring): a sequence stays valid until the user acts again
    schema=[
        Field(name="user_id", dtype=Int64, description="Raw user id (join key)."),
        Field(name="item_seq", dtype=Array(Int64),
              description="Raw item ids of the last max_seq_len behaviours, oldest first; [] if none."),
        Field(name="cate_seq", dtype=Array(Int64),
              description="Raw category ids aligned with item_seq; [] if none."),
        Field(name="seq_len", dtype=Int64, description="len(item_seq), in [0, max_seq_len]."),
    ],
    online=True,
    source=user_behavior_seq_source,
    tags={"owner": "genctr", "kind": "behaviour_sequence"},
)

item_features_fv = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(0),  # no TTL: an item keeps its attributes until they change
    schema=[
        Field(name="item_id", dtype=Int64, description="Raw item id (join key)."),
        Field(name="category_id", dtype=Int64, description="Raw category id (the item's latest)."),
        Field(name="price", dtype=Float32, description="Mean price / bid over the item's impressions."),
    ],
    online=True,
    source=item_features_source,
    tags={"owner": "genctr", "kind": "item_attributes"},
)

# --- feature services: one per model version ------------------------------------------------

ctr_model_v1 = FeatureService(
    name="ctr_model_v1",
    features=[user_behavior_seq_fv, item_features_fv],
    description="Inputs of the genctr CTR models (DNN / DCNv2 / DCNv2+TA backbones), version 1.",
    tags={"owner": "genctr"},
)
