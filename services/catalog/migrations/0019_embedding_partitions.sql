-- Similar-photo search stays fast for large libraries in a large shared index:
-- * Embeddings are stored as a fixed random projection to 256 dimensions (services/catalog/store/similarity.py):
--   the 1280-dimension index built and searched several times slower, and at a million images no longer fit the
--   memory its build is given.
-- * The table is split by owner into 16 hash partitions, each with its own HNSW index: an owner's search walks
--   only the index of the partition holding their images, among a sixteenth of everyone else's, so the owner
--   filter inside the index scan discards far fewer rows. (Owners with few images are searched exactly instead.)
-- Stored 1280-dimension embeddings cannot be projected in SQL: they are set aside in image_embeddings_1280, and the
-- catalog projects them into the new table in the background, a batch at a time, deleting each batch as it goes
-- (services/catalog/store/similarity.py, EmbeddingUpgrade): no model run. Near-duplicate links are kept.
DROP INDEX image_embeddings_nearest;
DROP INDEX image_embeddings_owner;
ALTER TABLE image_embeddings RENAME TO image_embeddings_1280;
ALTER INDEX image_embeddings_pkey RENAME TO image_embeddings_1280_pkey;

CREATE TABLE image_embeddings (
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    owner_id text NOT NULL,
    embedding public.halfvec(256) NOT NULL,
    PRIMARY KEY (owner_id, image_id)
) PARTITION BY HASH (owner_id);

DO $$
BEGIN
    FOR remainder IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE image_embeddings_%s PARTITION OF image_embeddings FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            remainder, remainder
        );
    END LOOP;
END
$$;

CREATE INDEX image_embeddings_image ON image_embeddings (image_id);
CREATE INDEX image_embeddings_nearest ON image_embeddings USING hnsw (embedding public.halfvec_cosine_ops);
