# ruff: noqa
import uuid

import files.models
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("files", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="media",
            name="uid",
            field=models.UUIDField(default=uuid.uuid4, editable=False),
        ),
        migrations.AddField(
            model_name="media",
            name="state",
            field=models.CharField(
                choices=[("public", "Public"), ("unlisted", "Unlisted"), ("private", "Private")],
                default="public",
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="media",
            name="media_file",
            field=models.FileField(max_length=500, upload_to=files.models.original_media_file_path),
        ),
    ]
