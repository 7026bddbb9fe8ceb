//! The format each cloud wants (`image_format` in clouds.yaml): which disk
//! format each cloud gets, the conversions that make them, and one read of
//! each made file into the clouds that want it.
//!
//! - **open** ([`plan`]): each cloud's format is decided before a job exists;
//!   a cloud that wants a format the file cannot become, or whose conversion
//!   would not fit under `state_dir/staging`, is refused there (one cloud:
//!   the request's error; several: that cloud fails alone).
//! - **convert** ([`Upload::make_targets`], after the upload slot): each
//!   target format is made once, by [`convert`], and shared by every cloud
//!   that wants it; the file itself feeds the clouds that take its format.
//! - **stream** and **verify** ([`Upload::stream_groups`],
//!   [`Upload::verify_groups`]): the runs are ordered by format, so each
//!   format's clouds are one slice, read once, side by side with the others;
//!   each cloud is verified against the hashes of the bytes it was sent.
//!
//! A made file is open and already unlinked ([`convert::StagedFile`]): its
//! space is freed when its last handle (the [`Group`]) is dropped, at the end
//! of the upload, whatever its end.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::join_all;

use super::reader::Digests;
use super::{CloudRun, Upload};
use crate::images::convert::{self, ConvertError};
use crate::images::source::SourceFile;
use crate::images::ImageError;
use crate::jobs::{JobRequest, JobState};
use crate::openstack::glance::{ContainerFormat, DiskFormat};
use crate::openstack::session::Session;

/// The disk format `cloud` gets for a file whose own (judged) format is
/// `file`: its `image_format` (`wanted`) when the file is (or can be made) of it.
/// Not converted: a file of a container other than `bare` (its content is
/// not a disk), and an ISO for a raw cloud (its bytes are raw already, and
/// only as `iso` does Nova boot it as a CD-ROM).
fn format_for(
    cloud: &str,
    wanted: Option<DiskFormat>,
    file: DiskFormat,
    container: ContainerFormat,
) -> Result<DiskFormat, ConvertError> {
    let Some(wanted) = wanted else {
        return Ok(file);
    };
    let as_is = wanted == file
        || container != ContainerFormat::Bare
        || (wanted == DiskFormat::Raw && file == DiskFormat::Iso);
    if as_is {
        Ok(file)
    } else if wanted == DiskFormat::Raw && convert::converts_to_raw(file) {
        Ok(DiskFormat::Raw)
    } else {
        Err(ConvertError::NoConversion {
            cloud: cloud.to_string(),
            from: file,
            to: wanted,
        })
    }
}

/// Before a job exists: the disk format of each cloud (in `clouds`' order),
/// free space checked for a conversion. A cloud that cannot get the file is
/// the request's error when it is the only one (`one`), else it carries its
/// error and fails alone.
pub(super) fn plan(
    source: &SourceFile,
    file_format: DiskFormat,
    container: ContainerFormat,
    state_dir: &Path,
    clouds: &mut [(Arc<Session>, Option<ImageError>)],
    one: bool,
) -> Result<Vec<DiskFormat>, ImageError> {
    let virtual_size = source.virtual_size().unwrap_or(source.size);
    let mut space: Option<Result<(), ConvertError>> = None;
    let mut formats = Vec::with_capacity(clouds.len());
    for (session, refused) in clouds.iter_mut() {
        let wanted = session.cloud().image_format;
        let format =
            format_for(session.name(), wanted, file_format, container).and_then(|format| {
                if format != file_format {
                    space
                        .get_or_insert_with(|| convert::check_space(state_dir, virtual_size))
                        .clone()?;
                }
                Ok(format)
            });
        match format {
            Ok(format) => formats.push(format),
            Err(err) if one => return Err(ImageError::Convert(err)),
            Err(err) => {
                refused.get_or_insert(ImageError::Convert(err));
                formats.push(file_format);
            }
        }
    }
    Ok(formats)
}

/// What a job reads, in bytes: the file once for the clouds that take it as
/// is, and each made format once (a raw disk: the file's virtual size).
pub(super) fn bytes_to_read(
    source: &SourceFile,
    file_format: DiskFormat,
    formats: &[DiskFormat],
) -> u64 {
    let mut seen: Vec<DiskFormat> = Vec::new();
    let mut total = 0u64;
    for format in formats {
        if seen.contains(format) {
            continue;
        }
        seen.push(*format);
        total = total.saturating_add(if *format == file_format {
            source.size
        } else {
            source.virtual_size().unwrap_or(source.size)
        });
    }
    total
}

/// One disk format and the bytes of it, read once into every cloud that
/// wants it (their runs are one slice: see [`same_format`]).
pub(super) struct Group {
    /// The disk format Glance is told.
    format: DiskFormat,
    /// The first read: the file itself, or what was made from it; `None` once
    /// taken, or when making it failed (its clouds failed with that).
    first: Option<SourceFile>,
    /// A second handle on the same bytes, for the tries after the first.
    spare: Option<SourceFile>,
}

impl Group {
    fn new(format: DiskFormat, source: SourceFile) -> Result<Group, ImageError> {
        let spare = source.duplicate()?;
        Ok(Group {
            format,
            first: Some(source),
            spare: Some(spare),
        })
    }

    /// The bytes to read now, and whether this is their first read.
    fn next_read(&mut self) -> Result<Option<(SourceFile, bool)>, ImageError> {
        if let Some(first) = self.first.take() {
            return Ok(Some((first, true)));
        }
        match &self.spare {
            Some(spare) => Ok(Some((spare.duplicate_at_start()?, false))),
            None => Ok(None),
        }
    }
}

/// Runs of one format are neighbours (the runs are sorted by format).
pub(super) fn same_format(a: &CloudRun, b: &CloudRun) -> bool {
    a.disk_format == b.disk_format
}

/// The formats of `runs` in their order, each once: the order of the groups.
pub(super) fn group_order(runs: &[CloudRun]) -> Vec<DiskFormat> {
    let mut order: Vec<DiskFormat> = Vec::new();
    for run in runs {
        if !order.contains(&run.disk_format) {
            order.push(run.disk_format);
        }
    }
    order
}

impl<R: JobRequest> Upload<'_, R> {
    /// The file's own format, as Glance would be told it without conversion.
    pub(super) fn file_format(&self) -> DiskFormat {
        self.request.disk_format.unwrap_or(self.detected_format)
    }

    /// Makes each format the live clouds want other than the file's (once),
    /// and returns one [`Group`] per format, in the order of `runs` (sorted
    /// by format). A failed conversion fails the clouds that wanted it.
    pub(super) async fn make_targets(
        &self,
        runs: &mut [CloudRun],
        source: SourceFile,
    ) -> Result<Vec<Group>, ImageError> {
        let file_format = self.file_format();
        let mut groups = Vec::new();
        for format in group_order(runs) {
            let live = runs.iter().any(|r| r.disk_format == format && r.is_live());
            if format == file_format || !live {
                groups.push(Group {
                    format,
                    first: None,
                    spare: None,
                });
                continue;
            }
            match self.convert(&source, format).await {
                Ok(made) => groups.push(Group::new(format, made)?),
                Err(err) => {
                    for run in runs.iter_mut().filter(|r| r.disk_format == format) {
                        if run.is_live() {
                            self.fail(run, ImageError::Convert(err.clone())).await;
                        }
                    }
                    groups.push(Group {
                        format,
                        first: None,
                        spare: None,
                    });
                }
            }
        }
        if let Some(group) = groups.iter_mut().find(|g| g.format == file_format) {
            *group = Group::new(file_format, source)?;
        }
        Ok(groups)
    }

    /// `source` made into `format` (raw: the only conversion today), opened
    /// as a source file of its own, and checked to be what Glance is told.
    async fn convert(
        &self,
        source: &SourceFile,
        format: DiskFormat,
    ) -> Result<SourceFile, ConvertError> {
        let from = source.detect_disk_format();
        if format != DiskFormat::Raw {
            return Err(ConvertError::Unsupported(from));
        }
        let virtual_size = source.virtual_size().unwrap_or(source.size);
        let started = std::time::Instant::now();
        tracing::info!(from = %from, to = %format, virtual_size, "converting the file");
        let staged =
            convert::to_raw(&self.settings.state_dir, &source.file, from, virtual_size).await?;
        let (path, bytes) = (staged.path.clone(), staged.size);
        let opened =
            tokio::task::spawn_blocking(move || SourceFile::from_open(staged.file, &staged.path))
                .await;
        let failed = |message: String| ConvertError::Failed {
            from,
            to: format,
            message,
        };
        let made = match opened {
            Ok(Ok(made)) => made,
            Ok(Err(err)) => return Err(failed(err.to_string())),
            Err(err) => return Err(failed(err.to_string())),
        };
        // The disk's own first bytes may be another format's header: Glance
        // would refuse the raw image, or boot it as that format.
        if let Err(reason) = made.judge(Some(format), ContainerFormat::Bare) {
            return Err(failed(format!(
                "the converted disk is not a plain {format} image: {reason}"
            )));
        }
        crate::metrics::image_converted(from.as_str(), format.as_str());
        tracing::info!(
            from = %from, to = %format, bytes, path = %path.display(),
            seconds = started.elapsed().as_secs_f64(), "converted"
        );
        Ok(made)
    }

    /// `skip_unchanged`, each format's clouds against the hashes of the bytes
    /// they would get.
    pub(super) async fn skip_unchanged_groups(
        &self,
        runs: &mut [CloudRun],
        groups: &mut [Group],
    ) -> Result<(), ImageError> {
        for (chunk, group) in runs.chunk_by_mut(same_format).zip(groups.iter_mut()) {
            if let Some(first) = group.first.take() {
                group.first = Some(self.skip_unchanged(chunk, first).await?);
            }
        }
        Ok(())
    }

    /// Stage "stream" for every format side by side, each read once into its
    /// clouds: per group, the digests of what was read (`None` when it had no
    /// cloud to send to) and a handle to hash it again.
    pub(super) async fn stream_groups(
        &self,
        runs: &mut [CloudRun],
        groups: &mut [Group],
    ) -> Result<Vec<Option<(Digests, Option<File>)>>, ImageError> {
        let mut reads = Vec::with_capacity(groups.len());
        for group in groups.iter_mut() {
            reads.push(group.next_read()?);
        }
        let streamed = join_all(runs.chunk_by_mut(same_format).zip(reads).map(
            |(chunk, read)| async move {
                match read {
                    Some((source, first_read)) => self.stream(chunk, source, first_read).await,
                    None => Ok(None),
                }
            },
        ))
        .await;
        streamed.into_iter().collect()
    }

    /// Stage "verify" for every format side by side, each cloud against the
    /// digests of the bytes it was sent.
    pub(super) async fn verify_groups(
        &self,
        runs: &mut [CloudRun],
        streamed: &[Option<(Digests, Option<File>)>],
    ) -> Result<(), ImageError> {
        self.report.job_stage(JobState::Verifying).await?;
        let verified = join_all(runs.chunk_by_mut(same_format).zip(streamed).map(
            |(chunk, streamed)| async move {
                match streamed {
                    Some((digests, rehash)) => self.verify(chunk, digests, rehash.as_ref()).await,
                    None => Ok(()),
                }
            },
        ))
        .await;
        verified.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiskFormat::{Iso, Qcow2, Raw, Vhd, Vhdx, Vmdk};

    #[test]
    fn each_cloud_gets_its_format_when_the_file_can_become_it() {
        let bare = ContainerFormat::Bare;
        let get = |wanted, file| format_for("c", wanted, file, bare);
        // No image_format, or the file's own: as is.
        assert_eq!(get(None, Qcow2).unwrap(), Qcow2);
        assert_eq!(get(Some(Qcow2), Qcow2).unwrap(), Qcow2);
        // raw from every format qemu-img converts.
        for file in [Qcow2, Vmdk, Vhd, Vhdx, DiskFormat::Vdi] {
            assert_eq!(get(Some(Raw), file).unwrap(), Raw, "{file}");
        }
        // An ISO stays an ISO; a non-bare container is not a disk.
        assert_eq!(get(Some(Raw), Iso).unwrap(), Iso);
        let ova = format_for("c", Some(Raw), Vmdk, ContainerFormat::Ova);
        assert_eq!(ova.unwrap(), Vmdk);
        // Anything else is refused, naming the cloud and both formats.
        for (wanted, file) in [(Qcow2, Raw), (Vmdk, Qcow2), (Raw, DiskFormat::Ploop)] {
            let err = get(Some(wanted), file).unwrap_err();
            assert!(
                matches!(err, ConvertError::NoConversion { from, to, .. } if from == file && to == wanted),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.contains("cloud 'c'"), "{message}");
            assert!(message.contains("image_format"), "{message}");
        }
    }
}
