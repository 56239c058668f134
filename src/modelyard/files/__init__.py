"""OpenAI's Files API: file rows per org, their bytes in object storage, expiry and a sweeper."""

from .service import FileObject, FilePage, FileService, Upload

__all__ = ["FileObject", "FilePage", "FileService", "Upload"]
