-- WordPress (`related build --source mysql+pymysql://user:pass@host/wordpress --query wordpress`).
-- Posts as articles: published ones are articles; trashed, draft, pending, private, scheduled and
-- password-protected ones are deleted (a sync removes them from the index). The url is the guid
-- (WordPress redirects it to the permalink); categories come through the term tables (the first by
-- name), the language from Polylang's `language` taxonomy where it is installed (else detected).
-- Tables with another prefix than `wp_`: copy this file, edit it, and pass its path to --query.
SELECT
  p.ID AS id,
  p.post_title AS title,
  p.post_content AS body,
  p.post_date_gmt AS published,
  (SELECT MIN(t.slug) FROM wp_term_relationships r
     JOIN wp_term_taxonomy tt ON tt.term_taxonomy_id = r.term_taxonomy_id
     JOIN wp_terms t ON t.term_id = tt.term_id
   WHERE r.object_id = p.ID AND tt.taxonomy = 'language') AS lang,
  (SELECT MIN(t.name) FROM wp_term_relationships r
     JOIN wp_term_taxonomy tt ON tt.term_taxonomy_id = r.term_taxonomy_id
     JOIN wp_terms t ON t.term_id = tt.term_id
   WHERE r.object_id = p.ID AND tt.taxonomy = 'category') AS category,
  p.guid AS url,
  p.post_modified_gmt AS updated_at,
  CASE WHEN p.post_status = 'publish' AND p.post_password = '' THEN 0 ELSE 1 END AS deleted
FROM wp_posts p
WHERE p.post_type = 'post'
  AND p.post_status IN ('publish', 'future', 'draft', 'pending', 'private', 'trash')
