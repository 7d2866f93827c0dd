-- What each photo looks like, for similar-photo search and near-duplicate groups: the classifier's pooled features,
-- L2-normalised, as half-precision floats (1280 x 2 bytes). They live beside the images, not in them, so listing
-- and search keep reading narrow rows; stored PLAIN (2.5 KB fits a page) so a distance never waits on TOAST.
-- Cosine distance through one HNSW index shared by every owner; queries filter by owner inside the index scan
-- (iteratively), so a user's results never include, count or depend on another user's images.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

CREATE TABLE image_embeddings (
    image_id bigint PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    owner_id text NOT NULL,
    embedding public.halfvec(1280) NOT NULL
);
ALTER TABLE image_embeddings ALTER COLUMN embedding SET STORAGE PLAIN;

CREATE INDEX image_embeddings_nearest ON image_embeddings USING hnsw (embedding public.halfvec_cosine_ops);
CREATE INDEX image_embeddings_owner ON image_embeddings (owner_id);

-- Another image of the same owner this one nearly duplicates (the same shot re-encoded, resized, cropped a
-- little or taken a moment apart), found when its embedding is stored.
ALTER TABLE images ADD COLUMN near_duplicate_of bigint REFERENCES images (id) ON DELETE SET NULL;
CREATE INDEX images_near_duplicates ON images (owner_id, near_duplicate_of) WHERE near_duplicate_of IS NOT NULL;
