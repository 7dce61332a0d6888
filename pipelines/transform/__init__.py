"""The transform stage: the Quix Streams application that validates each raw event
against its JSON Schema, normalizes it and routes every failure to the dead-letter topic
(stage), its lanes and reason codes (lanes), the schema registry (registry) and the
validators (schemas).

It imports only pipelines.core and writes only to Kafka.
"""
