"""The store, the pose model, uncertainty, selection and export."""
