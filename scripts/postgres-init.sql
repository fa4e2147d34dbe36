-- Extra databases on the compose PostgreSQL: Prefect's and the SpineTrack store's (Label Studio's is POSTGRES_DB).
CREATE DATABASE prefect OWNER spinetrack;
CREATE DATABASE spinetrack OWNER spinetrack;
