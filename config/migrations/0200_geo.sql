-- visitwire schema, version 0200: where a page view came from (processors/geo.py): ISO 3166-1 alpha-2
-- country of the client address ('' when unknown or private) and its city when a MaxMind City
-- database is configured (processing.geoip_city_db). Rows written before read as ''.
ALTER TABLE pageviews ADD COLUMN country String DEFAULT '';
ALTER TABLE pageviews ADD COLUMN city String DEFAULT '';
