from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The site's own user model from the first migration, so accounts can grow limits and keys."""
