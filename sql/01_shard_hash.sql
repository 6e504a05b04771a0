--
-- Shard ids match Pekko's HashCodeMessageExtractor: abs(Java
-- String.hashCode("mallId-userId")) % number_of_shards.  The expected
-- hash codes below were computed with Java 17's String.hashCode().
--
SELECT s, dc.java_hashcode(s) AS java_hash
  FROM (VALUES ('mall001-user001'), ('mall001-user002'), ('mall002-user001'),
               ('a-b'), ('-'), (''), ('몰001-사용자001'), ('쇼핑몰-홍길동'),
               ('mall-😀'), ('😀🎉-👍')) AS v(s);

-- Java reference values, checked in one go
SELECT bool_and(dc.java_hashcode(s) = h) AS all_match
  FROM (VALUES ('mall001-user001', 155007062), ('mall002-user001', -1652447401),
               ('몰001-사용자001', 1651721066), ('쇼핑몰-홍길동', -237648548),
               ('mall-😀', 835454908), ('😀🎉-👍', -40898771),
               ('mall-user500626힋힢', -2147483648)) AS v(s, h);

SELECT dc.shard_id('mall001', 'user001');          -- 62, as in the original
SELECT dc.shard_id('mall001', 'user002'),
       dc.shard_id('mall002', 'user001'),
       dc.shard_id('몰001', '사용자001'),
       dc.shard_id('쇼핑몰', '홍길동'),
       dc.shard_id('mall', '😀'),
       dc.shard_id('😀🎉', '👍');

-- hashCode = -2^31: Java's Math.abs keeps it negative; we use 2^31 (% 100 = 48)
SELECT dc.java_hashcode('mall-user500626힋힢'), dc.shard_id('mall', 'user500626힋힢');

-- an explicit number of shards
SELECT dc.shard_id('mall001', 'user001', 10), dc.shard_id('mall001', 'user001', 1);
SELECT dc.shard_id('mall001', 'user001', 0);
SELECT dc.shard_id('mall001', 'user001', 10001);
