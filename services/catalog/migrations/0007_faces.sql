-- Faces found by the face detector, in fractions of the upright image:
-- [{"box": {"x": .., "y": .., "width": .., "height": ..}, "score": ..}], best score first.
-- NULL when faces were not analysed (detector switched off or unavailable, or classified before faces existed).
ALTER TABLE images ADD COLUMN faces jsonb;
-- The face detector's version that found them; '' when not analysed. Reclassification runs images again when the
-- served detector's version differs.
ALTER TABLE images ADD COLUMN face_model_version text NOT NULL DEFAULT '';
