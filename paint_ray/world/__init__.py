"""The embedded open-vocabulary world: a seeded generator of captioned images and tasks drawn from it."""
