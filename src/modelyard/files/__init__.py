"""OpenAI's Files API: file rows per org, their bytes in object storage, expiry and a sweeper."""

from .service import FileObject, FilePage, FileService

__all__ = ["FileObject", "FilePage", "FileService"]
