-- What each photo looks like, for similar-photo search and near-duplicate groups: the classifier's pooled features,
-- L2-normalised, as half-precision floats (1280 x 2 bytes). Cosine distance through one HNSW index shared by every
-- owner; queries always filter by owner inside the query and scan the index iteratively, so a user's results
-- never include, count or depend on another user's images.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

ALTER TABLE images ADD COLUMN embedding public.halfvec(1280);
-- The earlier image of the same owner this one nearly duplicates (the same shot re-encoded, resized, cropped a
-- little or taken a moment apart), found when the embedding is stored.
ALTER TABLE images ADD COLUMN near_duplicate_of bigint REFERENCES images (id) ON DELETE SET NULL;

CREATE INDEX images_embedding ON images USING hnsw (embedding public.halfvec_cosine_ops);
CREATE INDEX images_near_duplicates ON images (owner_id, near_duplicate_of) WHERE near_duplicate_of IS NOT NULL;
-- The backfill walks images that have none yet.
CREATE INDEX images_without_embedding ON images (id) WHERE embedding IS NULL AND status = 'classified';
